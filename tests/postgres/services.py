"""The Dagster services of a deployment, as real processes on loopback: `dagster-daemon run` (run queue,
backfills, run monitoring) and `dagster-webserver` (the GraphQL API a backfill is launched through)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.conftest import free_port
from viscon_dagster.local.daemon import DAEMON_COMMAND

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 300  # a bound on waiting for processes on a loaded machine, not a measurement

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}"""
BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions error { message } }
    ... on PythonError { message }
  }
}"""
PARTITION_STATUS = """
query($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions }
      }
    }
  }
}"""
DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def graphql(url: str, query: str, variables: dict) -> dict:
    reply = requests.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=300)
    reply.raise_for_status()
    body = reply.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def launch_asset_backfill(url: str, asset_keys: list[str], partitions: list[str], tags: dict | None = None) -> str:
    params = {"assetSelection": [{"path": k.split("/")} for k in asset_keys], "partitionNames": partitions,
              "fromFailure": False, "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    result = graphql(url, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def wait_for_backfill(url: str, backfill_id: str, timeout_s: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        backfill = graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] in DONE:
            return backfill
        time.sleep(1)
    raise AssertionError(f"backfill {backfill_id} did not finish within {timeout_s:.0f} s")


def partition_status(url: str, asset_key: str) -> dict:
    node = graphql(url, PARTITION_STATUS, {"path": asset_key.split("/")})["assetNodeOrError"]
    assert node["__typename"] == "AssetNode", node
    return node["assetPartitionStatuses"]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the service and the code server it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def dagster_services(env: dict[str, str], log_dir: Path, module: str = "viscon_dagster.definitions",
                     daemon: list[str] = DAEMON_COMMAND):
    """Daemon and webserver on the instance of env["DAGSTER_HOME"]; yields the webserver's URL. `daemon`: the
    command that starts `dagster-daemon` (tests: its backfill loop shortened; a benchmark: the real one)."""
    port, env = free_port(), {**os.environ, **env}
    started = []
    try:
        for name, args in [("daemon", [*daemon, "run", "-m", module]),
                           ("webserver", [BIN / "dagster-webserver", "-m", module, "-h", "127.0.0.1",
                                          "-p", str(port)])]:
            log = open(log_dir / f"{name}.log", "w")  # kept by tmp_path for a look after a failure
            started.append(subprocess.Popen([str(a) for a in args], env=env, cwd=REPO, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + WAIT_S
        while True:
            assert all(p.poll() is None for p in started), (log_dir / "webserver.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/server_info", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the webserver did not start"
            time.sleep(1)
        yield url
    finally:
        for proc in reversed(started):
            _stop(proc)
