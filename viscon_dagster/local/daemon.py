"""A `dagster-daemon run` for this process's backfills, unless a live one already serves the instance (`viscon ui`,
`dg dev`, a deployment's daemon)."""

from __future__ import annotations

import fcntl
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

DAEMON_FRESH_S = 60  # a daemon whose last heartbeat is younger than this is taken as alive (it beats every 30 s)
FIRST_HEARTBEAT_S = 300  # how long a started daemon may take to load the workspace and beat (a loaded machine)
# the real daemon CLI with a short backfill loop (local/daemon_process.py says why)
DAEMON_COMMAND = [sys.executable, "-m", "viscon_dagster.local.daemon_process"]


class DaemonError(RuntimeError):
    pass


def daemon_alive(instance: dg.DagsterInstance) -> bool:
    beats = instance.get_daemon_heartbeats()
    beat = beats.get("BACKFILL")
    return beat is not None and time.time() - beat.timestamp < DAEMON_FRESH_S


@contextmanager
def running_daemon(instance: dg.DagsterInstance, workspace: Workspace, log: Path | None = None,
                   command: Sequence[str] | None = None) -> Iterator[int | None]:
    """A `dagster-daemon run` on this instance for the duration, unless a live one already serves it
    (`viscon ui`, `dg dev`); yields its pid (None when an existing daemon is used). Stopped by its pid.
    `command`: what starts the daemon (default: `DAEMON_COMMAND`, the daemon CLI with a short backfill loop).

    Two daemons on one instance each run every backfill (Dagster marks it failed), so the check and the start are
    one step under a lock in DAGSTER_HOME, and the started daemon is yielded only once it has written its first
    heartbeat: a `viscon` process that starts right after this one then finds it alive. Its heartbeats are removed
    once it is stopped, or the next `viscon backfill` within a minute would take it for alive and wait for nothing."""
    with _start_lock(instance):
        daemon = None if daemon_alive(instance) else _start_daemon(instance, workspace, log, command)
        if daemon is not None:
            try:
                _wait_for_first_heartbeat(instance, daemon, log)
            except BaseException:
                _stop(daemon)
                raise
    if daemon is None:
        yield None
        return
    try:
        yield daemon.pid
    finally:
        _stop(daemon)
        instance.wipe_daemon_heartbeats()


@contextmanager
def _start_lock(instance: dg.DagsterInstance) -> Iterator[None]:
    with open(Path(instance.root_directory) / ".viscon-daemon.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _wait_for_first_heartbeat(instance: dg.DagsterInstance, daemon: subprocess.Popen, log: Path | None,
                              timeout_s: float = FIRST_HEARTBEAT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not daemon_alive(instance):
        where = f"; its log: {log}" if log else ""
        if daemon.poll() is not None:
            raise DaemonError(f"dagster-daemon exited with {daemon.returncode} before its first heartbeat{where}")
        if time.monotonic() > deadline:
            raise DaemonError(f"dagster-daemon wrote no heartbeat within {timeout_s:.0f} s{where}")
        time.sleep(0.5)


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
