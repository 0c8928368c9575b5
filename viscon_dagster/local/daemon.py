"""A `dagster-daemon run` for this process's backfills, unless a live one already serves the instance (`viscon ui`,
`dg dev`, a deployment's daemon)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg

from viscon_dagster.local.workspace import Workspace

DAEMON_FRESH_S = 60  # a daemon whose last heartbeat is younger than this is taken as alive
# the real daemon CLI with a short backfill loop (local/daemon_process.py says why)
DAEMON_COMMAND = [sys.executable, "-m", "viscon_dagster.local.daemon_process"]


def daemon_alive(instance: dg.DagsterInstance) -> bool:
    beats = instance.get_daemon_heartbeats()
    beat = beats.get("BACKFILL")
    return beat is not None and time.time() - beat.timestamp < DAEMON_FRESH_S


@contextmanager
def running_daemon(instance: dg.DagsterInstance, workspace: Workspace, log: Path | None = None,
                   command: Sequence[str] | None = None) -> Iterator[int | None]:
    """A `dagster-daemon run` on this instance for the duration, unless a live one already serves it
    (`viscon ui`, `dg dev`); yields its pid (None when an existing daemon is used). Stopped by its pid.
    `command`: what starts the daemon (default: `DAEMON_COMMAND`, the daemon CLI with a short backfill loop)."""
    if daemon_alive(instance):
        yield None
        return
    daemon = _start_daemon(instance, workspace, log, command)
    try:
        yield daemon.pid
    finally:
        _stop(daemon)


def _start_daemon(instance: dg.DagsterInstance, workspace: Workspace, log: Path | None,
                  command: Sequence[str] | None = None) -> subprocess.Popen:
    out = log.open("a") if log else subprocess.DEVNULL
    command = list(command or DAEMON_COMMAND)
    try:
        return subprocess.Popen([*command, "run", "-w", str(workspace.yaml)],
                                env={**os.environ, "DAGSTER_HOME": instance.root_directory},
                                cwd=workspace.yaml.parent, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if log:
            out.close()  # the daemon holds its own copy


def _stop(daemon: subprocess.Popen) -> None:
    if daemon.poll() is not None:
        return
    daemon.send_signal(signal.SIGINT)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
