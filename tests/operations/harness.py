"""A temporary instance with the config `viscon` writes and a real `dagster-daemon` (its backfill loop shortened:
viscon_dagster/local/daemon_process.py), stopped by its pid."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from viscon_dagster.instance_policy import LOCAL, apply_pool_limits
from viscon_dagster.local.daemon import DAEMON_COMMAND, running_daemon
from viscon_dagster.local.instance import default_instance_yaml
from viscon_dagster.local.workspace import Workspace, file_workspace

WAIT_S = 300  # a bound on a loaded 2-core machine, not a measurement


def new_instance(home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    sizes = dataclasses.replace(LOCAL, poll_interval_seconds=5)
    (home / "dagster.yaml").write_text(default_instance_yaml(sizes) + "telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(home))
    apply_pool_limits(instance, sizes)  # the gpu pool's one slot, as `viscon` sets it
    return instance


@contextmanager
def daemon_on(instance: dg.DagsterInstance, defs_file: Path, folder: Path) -> Iterator[Workspace]:
    workspace = file_workspace(defs_file, folder)
    with running_daemon(instance, workspace, log=folder / "daemon.log", command=DAEMON_COMMAND) as pid:
        assert pid is not None  # our own daemon, not someone else's
        yield workspace


def wait_for(what: str, probe: Callable, timeout_s: float = WAIT_S, every_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(every_s)
    raise AssertionError(f"gave up waiting for {what} after {timeout_s:.0f} s")


def step_spans(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """step key → (started, finished) timestamps from the run's events."""
    spans: dict[str, list[float]] = {}
    for e in instance.all_logs(run_id):
        if e.dagster_event is None or e.step_key is None:
            continue
        kind = e.dagster_event.event_type_value
        if kind == "STEP_START":
            spans.setdefault(e.step_key, [e.timestamp, 0.0])[0] = e.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            spans.setdefault(e.step_key, [0.0, 0.0])[1] = e.timestamp
    return {k: (a, b) for k, (a, b) in spans.items()}


def run_span(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    record = instance.get_run_record_by_id(run_id)
    return record.start_time, record.end_time
