"""A deployment on one machine, as real processes on 127.0.0.1: PostgreSQL (run, event and schedule storage), an S3
server (moto's server mode, `moto_server`) for the storage root, the IO manager, the model store and the compute
logs, a gRPC code server (`dagster api grpc`, what the Helm chart's user deployment runs), and `dagster-daemon` with
the QueuedRunCoordinator and deploy/dagster.yaml's policy (its backfill loop shortened: local/daemon_process.py).
Runs are launched by the daemon as processes of their own, each in a fresh working directory and HOME
(tests/deploy/pod_launcher.py). The instance is deploy/dagster.yaml with only the launcher, the coordinator and the
compute logs added (the keys the Helm chart and deploy/ecs/dagster.yaml set)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import free_port
from tests.postgres.conftest import PostgresMissing, running_postgres
from viscon_dagster.local.daemon import DAEMON_COMMAND

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WAIT_S = 300  # a bound on a loaded 2-core machine, not a measurement
LOCATION = "viscon_dagster"
LOGS_PREFIX = "dagster/compute-logs"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
       "AWS_DEFAULT_REGION": "us-east-1"}  # moto accepts any credentials


@dataclass
class Stack:
    env: dict[str, str]          # what every process of the deployment sees
    home: Path                   # DAGSTER_HOME
    workspace: Path              # the daemon's workspace.yaml (the code server, by gRPC)
    s3_endpoint: str
    bucket: str
    folder: Path                 # logs of each service, the runs' folders

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name=AWS["AWS_REGION"],
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def instance_yaml(pods_dir: Path, bucket: str, endpoint: str) -> str:
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    config.pop("telemetry", None)
    config.update({
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"},
        "run_launcher": {"module": "tests.deploy.pod_launcher", "class": "PodLikeRunLauncher",
                         "config": {"pods_dir": str(pods_dir)}},
        "compute_logs": {"module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager",
                         "config": {"bucket": bucket, "prefix": LOGS_PREFIX, "endpoint_url": endpoint,
                                    "region": AWS["AWS_REGION"], "upload_interval": 5}},
        "telemetry": {"enabled": False},
    })
    return yaml.safe_dump(config, sort_keys=False)


def _start(name: str, args: list[str], env: Mapping[str, str], folder: Path) -> subprocess.Popen:
    cwd = folder / name  # each service in its own working directory and HOME, as in its own container
    (cwd / "home").mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.log", "w") as log:
        return subprocess.Popen([str(a) for a in args], cwd=cwd, env={**env, "HOME": str(cwd / "home")},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    import socket

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"nothing listens on {port} after {WAIT_S} s: {log.read_text()[-2000:]}")


@contextmanager
def running_stack(folder: Path, app_env: Mapping[str, str]) -> Iterator[Stack]:
    """Postgres, S3, the code server and the daemon, with `app_env` (the pipeline's settings) in every process."""
    import boto3

    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        try:
            pg = stack.enter_context(running_postgres())
        except PostgresMissing as e:
            import pytest

            pytest.skip(str(e))
        s3_port = free_port()
        moto = _start("s3", [BIN / "moto_server", "-H", "127.0.0.1", "-p", str(s3_port)], os.environ, folder)
        stack.callback(_stop, moto)
        _wait_port(s3_port, moto, folder / "s3.log")
        endpoint, bucket = f"http://127.0.0.1:{s3_port}", "viscon-data"
        boto3.client("s3", endpoint_url=endpoint, **{k.lower(): v for k, v in AWS.items()
                                                     if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")},
                     region_name=AWS["AWS_REGION"]).create_bucket(Bucket=bucket)

        home = folder / "dagster_home"
        home.mkdir(exist_ok=True)
        (home / "dagster.yaml").write_text(instance_yaml(folder / "pods", bucket, endpoint))
        env = {**os.environ, **AWS, **pg.env(pg.create_database()), **app_env, "DAGSTER_HOME": str(home),
               "VISCON_STORAGE_ROOT": f"s3://{bucket}/viscon", "VISCON_S3_ENDPOINT_URL": endpoint,
               "PYTHONPATH": str(REPO),  # the test launcher (tests.deploy.pod_launcher) is importable everywhere
               # runs start as `dagster api execute_run` (the code server's entry point), found on PATH as in the image
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

        grpc_port = free_port()
        code = _start("code_server", [sys.executable, "-m", "dagster", "api", "grpc", "-h", "127.0.0.1", "-p",
                                      str(grpc_port), "-m", "viscon_dagster.definitions", "--location-name",
                                      LOCATION], env, folder)
        stack.callback(_stop, code)
        _wait_port(grpc_port, code, folder / "code_server.log")
        workspace = folder / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}}]}))
        daemon = _start("daemon", [*DAEMON_COMMAND, "run", "-w", workspace], env, folder)
        stack.callback(_stop, daemon)
        yield Stack(env=env, home=home, workspace=workspace, s3_endpoint=endpoint, bucket=bucket, folder=folder)


@contextmanager
def graphql(stack: Stack) -> Iterator:
    """`run(query, variables) -> data`: the webserver's GraphQL over the deployment's code server (what the UI
    does), from this process."""
    from dagster._core.definitions.partitions.context import partition_loading_context
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql import __version__
    from dagster_graphql.cli import execute_query

    with stack.instance() as instance, WorkspaceProcessContext(
            instance, WorkspaceFileTarget([str(stack.workspace)]), version=__version__, read_only=False) as context:
        def run(query: str, variables: Mapping) -> dict:
            with partition_loading_context(dynamic_partitions_store=instance):
                result = execute_query(context, query, dict(variables))
            assert not result.get("errors"), result["errors"]
            return result["data"]

        yield run
