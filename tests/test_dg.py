"""The `dg` CLI on our project (`[tool.dg]` in pyproject.toml): checking and listing the definitions,
launching one asset partition, and `viscon ui` serving the UI through `dg dev`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from tests.conftest import free_port
from tests.test_webserver import ALL_ASSETS, asset_nodes

pytestmark = pytest.mark.slow  # real servers, daemons or training: the slow tier

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def dg_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dg"), *args], cwd=REPO, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=300)


def test_dg_checks_and_lists_the_definitions():
    checked = dg_cli(["check", "defs"])
    assert checked.returncode == 0, checked.stderr[-2000:]
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr
    listed = dg_cli(["list", "defs", "--json"])
    assert listed.returncode == 0, listed.stderr[-2000:]
    keys = sorted(a["asset_key"] for a in json.loads(listed.stdout)["assets"])
    assert keys == ALL_ASSETS


def test_dg_launch_materializes_one_shard_partition(tmp_path, sample_dir, tokenizer_dir):
    store = tmp_path / "store"
    env = {"VISCON_STORAGE_ROOT": store.as_uri(), "VISCON_TOKENIZER": str(tokenizer_dir)}
    registered = subprocess.run([str(BIN / "viscon"), "shards", "register", str(sample_dir / "shards")],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert registered.returncode == 0, registered.stderr[-2000:]
    launched = dg_cli(["launch", "--assets", "filtered_docs", "--partition", "sample-00001"], env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert pq.read_table(store / "filtered_docs" / "sample-00001.parquet").num_rows > 0
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        assert instance.get_materialized_partitions(dg.AssetKey("filtered_docs")) == {"sample-00001"}


def test_viscon_ui_serves_the_asset_graph_through_dg_dev(tmp_path):
    port = free_port()
    proc = subprocess.Popen([str(BIN / "viscon"), "ui", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url, deadline, nodes = f"http://127.0.0.1:{port}", time.monotonic() + 240, None
    try:
        while time.monotonic() < deadline and not (nodes := asset_nodes(url)):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # dg dev, its webserver, daemon and code server
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert nodes, "viscon ui served no asset graph within 240 s"
    assert sorted("/".join(n["assetKey"]["path"]) for n in nodes) == ALL_ASSETS
    assert (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").exists()  # the instance viscon writes
