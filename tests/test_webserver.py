"""The Dagster UI serves our code location: dagster-webserver on 127.0.0.1, asked over GraphQL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.conftest import free_port
from tests.test_definitions import PER_SHARD

REPO = Path(__file__).resolve().parent.parent
QUERY = "{ assetNodes { assetKey { path } isPartitioned } }"


def test_webserver_lists_our_asset_nodes(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    webserver = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen([str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        nodes, deadline = None, time.monotonic() + 180
        while time.monotonic() < deadline and not nodes:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                r = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                nodes = r.json().get("data", {}).get("assetNodes") if r.ok else None
            except requests.ConnectionError:
                pass
            time.sleep(1)
        assert nodes, "the webserver did not serve asset nodes within 180 s"
        keys = sorted("/".join(n["assetKey"]["path"]) for n in nodes)
        assert keys == sorted(PER_SHARD + ["viscon_100k_release"])
        assert {k for k, n in zip(keys, sorted(nodes, key=lambda n: n["assetKey"]["path"])) if n["isPartitioned"]} \
            == set(PER_SHARD)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode is not None
