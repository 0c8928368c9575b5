"""The Dagster UI serves our code location: dagster-webserver on 127.0.0.1, asked over GraphQL and
rendered in headless Chromium."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, headless_chromium
from tests.test_definitions import ABLATION_ALL, CAPTIONER, PER_SHARD, PER_SHARD_1M

pytestmark = pytest.mark.slow  # real servers, daemons or training: the slow tier

REPO = Path(__file__).resolve().parent.parent
QUERY = "{ assetNodes { assetKey { path } isPartitioned } }"
ALL_ASSETS = sorted(PER_SHARD + ["viscon_100k_release"] + PER_SHARD_1M + ["viscon_1m_release"] + CAPTIONER
                    + ABLATION_ALL)
PER_MIX = [f"{p}{k}" for p in ("", "viscon_1m/") for k in ("mix_finetune", "mix_benchmark")]  # the ablation's


def asset_nodes(url: str):
    try:
        r = requests.post(f"{url}/graphql", json={"query": QUERY}, timeout=10)
        return r.json().get("data", {}).get("assetNodes") if r.ok else None
    except requests.ConnectionError:
        return None


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    port = free_port()
    webserver_bin = str(Path(sys.executable).with_name("dagster-webserver"))
    proc = subprocess.Popen([webserver_bin, "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
                            cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 180
    try:
        while time.monotonic() < deadline and not asset_nodes(url):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # stopped by its PID (and its children with it)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_graphql_lists_our_asset_nodes(webserver):
    nodes = asset_nodes(webserver)
    assert nodes, "the webserver did not serve asset nodes within 180 s"
    keys = sorted("/".join(n["assetKey"]["path"]) for n in nodes)
    assert keys == ALL_ASSETS
    partitioned = {"/".join(n["assetKey"]["path"]) for n in nodes if n["isPartitioned"]}
    assert partitioned == {*PER_SHARD, *PER_SHARD_1M, "contextual_captioner", "captioner_evaluation", *PER_MIX}


def test_asset_catalog_renders_in_headless_chromium(webserver, tmp_path):
    # a window tall enough for every row: the catalog renders only the rows in view
    out = headless_chromium(f"{webserver}/assets", tmp_path / "profile", "--window-size=1400,6000", budget_ms=20000)
    dom = out.stdout
    assert "<html" in dom
    # prefixed assets sit in a folder the catalog renders collapsed (the GraphQL test above checks every key)
    shown = [k for k in ALL_ASSETS if not k.startswith("viscon_1m")]
    missing = [k for k in shown if k not in dom]
    assert not missing, f"the rendered asset catalog lacks {missing}"
