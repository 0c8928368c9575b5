"""The feeding benchmark (benchmarks/feeding/feed.py) keeps working: run at a small size, it answers every request
through both backends, times every phase and shows the engine never waiting between batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_feeding_benchmark_runs_small(tmp_path):
    out = tmp_path / "feed.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "feeding" / "feed.py"), "--requests", "48",
                           "--images", "4", "--engine", "vllm,http", "--processes", "1", "--gen-ms", "300",
                           "--batch", "16", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "cores" in report["machine"] and "load average" in report["machine"]
    results = {r["engine"]: r for r in report["results"]}
    assert set(results) == {"vllm", "http"}
    for r in results.values():
        assert r["requests"] == 48 and r["requests_per_s"] > 0
        phases = r["phases_ms"]
        assert phases["context_prompt"] > 0 and phases["read_decode"] > 0 and phases["rows"] > 0
        assert r["cpu_ms_per_request"] >= phases["context_prompt"] + phases["read_decode"]
    calls = results["vllm"]["engine_calls"]
    assert len(calls) == 3  # 48 requests in batches of 16
    assert max(b[0] - a[1] for a, b in zip(calls, calls[1:])) < 0.2  # the next batch was ready when one ended
    assert "| vllm | 1 | 48 |" in proc.stdout and "| http | 1 | 48 |" in proc.stdout
