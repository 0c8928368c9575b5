"""The same load as bench_http.py, through bespokelabs-curator, run from curator's own venv
(`python3.11 -m venv .venv-curator && .venv-curator/bin/pip install bespokelabs-curator`).

    .venv-curator/bin/python benchmarks/models/bench_curator.py BASE_URL CONCURRENCY N

Prints one JSON line: {"ok", "wall_s", "cpu_s"} (cpu: this process and its children).
"""

import json
import os
import resource
import sys
import time

os.environ.setdefault("TELEMETRY_ENABLED", "false")  # no posthog from a benchmark
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _bundled_tiktoken_dir() -> str | None:
    """litellm ships tiktoken's cl100k_base file; curator would otherwise download it (no network here)."""
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(spec.submodule_search_locations[0], "litellm_core_utils", "tokenizers")


if _dir := _bundled_tiktoken_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", _dir)


def cpu_s() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main() -> None:
    base_url, concurrency, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    from bespokelabs import curator

    llm = curator.LLM(model_name="gpt-4o-mini", backend="openai",
                      generation_params={"max_tokens": 16, "temperature": 0.0},
                      backend_params={"base_url": base_url, "api_key": "sk-bench",
                                      "max_concurrent_requests": concurrency,
                                      "max_requests_per_minute": 10_000_000, "max_tokens_per_minute": 10**10,
                                      "request_timeout": 60, "require_all_responses": False})
    prompts = [f"bench curator {concurrency} {time.time_ns()} {i}" for i in range(n)]
    c0, t0 = cpu_s(), time.perf_counter()
    out = llm(prompts)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    ds = out.dataset if hasattr(out, "dataset") else out
    ok = sum(1 for r in ds if r.get("response"))
    print(json.dumps({"ok": ok, "wall_s": wall, "cpu_s": cpu}))


if __name__ == "__main__":
    main()
