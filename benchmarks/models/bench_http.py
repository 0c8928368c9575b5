"""Throughput of the OpenAI-compatible backend against a loopback server with a fixed latency.

    .venv/bin/python benchmarks/models/bench_http.py [--latency 0.2] [--concurrency 64 256] [--waves 25]
                                                     [--curator-python .venv-curator/bin/python] [--baselines]

The server is the test suite's OpenAI double (tests/models/openai_double.py), in its own process,
answering every request after exactly `latency` seconds with unlimited capacity. For each concurrency
c the client sends `waves * c` requests in one call; ideal throughput is c / latency. "of ideal" is over
the whole call; "sustained" is the rate between the 10th and 90th percentile completion (no ramp-up, no
last wave). Client CPU per request is the client process's user+system time over the requests. With
--curator-python, bespokelabs-curator runs the same load from its own venv (bench_curator.py) against
the same server, in the same run; --baselines adds the bare openai client (with default and with our
GC settings) and bare aiohttp. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests/models/openai_double.py"), "--port", str(port),
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()  # "listening on …"
    return proc, f"http://127.0.0.1:{port}/v1"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sustained_rps(done_at: list[float]) -> float | None:
    """Rate between the 10th and 90th percentile completion: the run without its connection ramp-up and
    its last, partly filled wave."""
    if len(done_at) < 20:
        return None
    t = sorted(done_at)
    lo, hi = len(t) // 10, len(t) * 9 // 10
    return (hi - lo) / (t[hi] - t[lo])


def run_ours(base_url: str, concurrency: int, n: int, journal: bool) -> dict:
    from upath import UPath

    from viscon_dagster.core.models.request import Request, SamplingParams
    from viscon_dagster.resources.models import OpenAIHTTPBackend

    b = OpenAIHTTPBackend(model="gpt-4o-mini", base_url=base_url, api_key="sk-bench", max_concurrency=concurrency)
    reqs = [Request.user(f"bench {concurrency} {journal} {time.time_ns()} {i}", params=SamplingParams(max_tokens=16))
            for i in range(n)]
    with tempfile.TemporaryDirectory() as d:
        done_at: list[float] = []
        c0, t0 = cpu_s(), time.perf_counter()
        out = b.generate(reqs, journal_dir=UPath(Path(d).as_uri()) if journal else None,
                         on_response=lambda r: done_at.append(time.perf_counter()))
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    ok = sum(r.ok for r in out)
    return {"ok": ok, "wall_s": wall, "cpu_s": cpu, "sustained_rps": sustained_rps(done_at)}


def run_raw(base_url: str, concurrency: int, n: int, via: str, tune_gc: bool = False) -> dict:
    """Baselines without our layer: the bare openai client (its POST), or bare aiohttp; `tune_gc` gives
    them the garbage-collector settings our backend uses, to show what the layer itself costs."""
    import asyncio

    import aiohttp
    import httpx2
    import openai

    body = {"model": "gpt-4o-mini", "max_tokens": 16}
    done_at: list[float] = []

    async def main() -> int:
        sem = asyncio.Semaphore(concurrency)
        if via == "openai":
            client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0,
                                        http_client=openai.DefaultAioHttpClient(limits=httpx2.Limits(
                                            max_connections=concurrency, max_keepalive_connections=concurrency)))

            async def one(i):
                async with sem:
                    r = await client.post("/chat/completions", cast_to=httpx2.Response,
                                          body={**body, "messages": [{"role": "user", "content": f"raw {i}"}]})
                    done_at.append(time.perf_counter())
                    return r.json()["choices"][0]["message"]["content"] is not None
            try:
                return sum(await asyncio.gather(*(one(i) for i in range(n))))
            finally:
                await client.close()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
            async def one(i):
                async with sem:
                    async with s.post(f"{base_url}/chat/completions", headers={"Authorization": "Bearer sk-bench"},
                                      json={**body, "messages": [{"role": "user", "content": f"raw {i}"}]}) as r:
                        data = await r.json()
                        done_at.append(time.perf_counter())
                        return data["choices"][0]["message"]["content"] is not None
            return sum(await asyncio.gather(*(one(i) for i in range(n))))

    from viscon_dagster.core.models.gc_tuning import gc_tuned_for_throughput

    c0, t0 = cpu_s(), time.perf_counter()
    with gc_tuned_for_throughput() if tune_gc else contextlib.nullcontext():
        ok = asyncio.run(main())
    return {"ok": ok, "wall_s": time.perf_counter() - t0, "cpu_s": cpu_s() - c0,
            "sustained_rps": sustained_rps(done_at)}


def run_curator(python: str, base_url: str, concurrency: int, n: int) -> dict:
    script = Path(__file__).with_name("bench_curator.py")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CURATOR_CACHE_DIR": cache, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
               "LITELLM_LOCAL_MODEL_COST_MAP": "True", "CURATOR_DISABLE_RICH_DISPLAY": "1",
               "CURATOR_VIEWER": "0", "OPENAI_API_KEY": "sk-bench"}
        p = subprocess.run([python, str(script), base_url, str(concurrency), str(n)], capture_output=True,
                           text=True, env=env, timeout=900)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout)[-1500:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--waves", type=int, default=25)
    ap.add_argument("--curator-python", default=None)
    ap.add_argument("--baselines", action="store_true", help="also the bare openai client and bare aiohttp")
    args = ap.parse_args()
    server, base_url = start_server(args.latency)
    rows = []
    try:
        run_ours(base_url, 8, 16, False)  # warm-up: imports, first connections
        for c in args.concurrency:
            n = args.waves * c
            ideal = c / args.latency
            for name, fn in (("viscon (no journal)", lambda c=c, n=n: run_ours(base_url, c, n, False)),
                             ("viscon (local journal)", lambda c=c, n=n: run_ours(base_url, c, n, True)),
                             *((("curator", lambda c=c, n=n: run_curator(args.curator_python, base_url, c, n)),)
                               if args.curator_python else ()),
                             *((("bare openai client (baseline)", lambda c=c, n=n: run_raw(base_url, c, n, "openai")),
                                ("bare openai client, our GC settings",
                                 lambda c=c, n=n: run_raw(base_url, c, n, "openai", True)),
                                ("bare aiohttp (baseline)", lambda c=c, n=n: run_raw(base_url, c, n, "aiohttp")))
                               if args.baselines else ())):
                r = fn()
                if "error" in r:
                    rows.append(f"| {name} | {c} | {n} | failed: {r['error'].splitlines()[-1][:120]} | | | | | |")
                    continue
                rps = r["ok"] / r["wall_s"]
                sus = r.get("sustained_rps")
                sustained = f"{sus / ideal:.2f}" if sus else "n/a"
                rows.append(f"| {name} | {c} | {n} | {r['ok']} | {r['wall_s']:.2f} | {rps:.0f} | {rps / ideal:.2f} "
                            f"| {sustained} | {1000 * r['cpu_s'] / n:.2f} |")
                print(rows[-1], file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait(10)
    load = os.getloadavg()[0]
    print(f"\nLoopback OpenAI-compatible server, fixed latency {args.latency * 1000:.0f} ms, unlimited capacity; "
          f"{os.cpu_count()} CPU cores shared by server and client (load average {load:.1f} at the end).\n")
    print("| client | concurrency | requests | ok | wall s | req/s | of ideal | sustained, of ideal "
          "| client CPU ms/req |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
