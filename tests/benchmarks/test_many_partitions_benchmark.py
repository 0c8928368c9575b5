"""The many-partitions benchmark (benchmarks/scale/many_partitions.py) keeps working: at two small sizes on SQLite,
with the CLI registration and a real daemon launching the backfill, it times every figure and finds nothing stale
once every shard is materialized."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIGURES = ("cli_register_s", "cli_register_again_s", "tick_first_s", "tick_s", "tick_materialized_s", "plan_s",
           "submit_s", "launch_s", "partition_status_s", "stale_plan_s")


@pytest.mark.slow
def test_the_many_partitions_benchmark_runs_small(tmp_path):
    out = tmp_path / "many.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale.many_partitions", "--sizes", "30,60",
                           "--instances", "sqlite", "--launch", "--cli-register", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "cores" in report["machine"] and "load average" in report["machine"]
    assert [r["shards"] for r in report["results"]] == [30, 60]
    for r in report["results"]:
        assert all(r[f] > 0 for f in FIGURES), r
        assert r["backfill_partitions"] == r["shards"] and r["runs"] == -(-r["shards"] // 50)
    assert "| launch it: the daemon creates its runs" in proc.stdout and "growth for 2× the shards" in proc.stdout
