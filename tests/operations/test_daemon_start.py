"""The daemon `viscon` starts for a backfill: never a second one beside a live daemon (two daemons each run every
backfill, and Dagster then marks it failed), and a stopped one is not taken for alive by the next `viscon` command;
a backfill that fails says why. Real `dagster-daemon` processes on a temporary SQLite instance."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pytest

from tests.operations.harness import new_instance
from viscon_dagster.local.backfills import run_backfill
from viscon_dagster.local.daemon import daemon_alive, running_daemon
from viscon_dagster.local.workspace import file_workspace

DEFS = Path(__file__).parent / "queue_defs.py"
pytestmark = pytest.mark.slow


def test_a_started_daemon_beats_before_it_is_used_and_is_forgotten_once_stopped(tmp_path):
    instance = new_instance(tmp_path / "home")
    workspace = file_workspace(DEFS, tmp_path)
    assert not daemon_alive(instance)
    with running_daemon(instance, workspace, log=tmp_path / "daemon.log") as pid:
        assert pid is not None
        assert daemon_alive(instance)  # its first heartbeat is in: a `viscon` started now uses it
        with running_daemon(instance, workspace) as second:
            assert second is None
    assert not daemon_alive(instance)  # stopped: the next command starts its own instead of waiting on nothing
    with running_daemon(instance, workspace, log=tmp_path / "daemon.log") as again:
        assert again is not None and again != pid


def test_two_commands_starting_at_once_share_one_daemon(tmp_path):
    instance = new_instance(tmp_path / "home")
    workspace = file_workspace(DEFS, tmp_path)
    pids: list[int | None] = []
    both_in = threading.Barrier(2, timeout=600)

    def command() -> None:
        with running_daemon(instance, workspace, log=tmp_path / "daemon.log") as pid:
            pids.append(pid)
            both_in.wait()  # the two hold their daemon (or the other's) at the same time

    threads = [threading.Thread(target=command) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert len(pids) == 2 and pids.count(None) == 1, pids  # one started a daemon, the other used it
    assert (tmp_path / "daemon.log").read_text().count("Instance is configured with the following daemons") == 1


def test_a_failed_backfill_names_its_failed_runs_and_their_errors(tmp_path):
    instance = new_instance(tmp_path / "home")
    workspace = file_workspace(Path(__file__).parent / "failing_defs.py", tmp_path)
    lines: list[str] = []
    ok = run_backfill(instance, {dg.AssetKey("fragile"): ["a", "b"]}, workspace=workspace, on_progress=lines.append,
                      daemon_log=tmp_path / "daemon.log")
    assert not ok
    report = "\n".join(lines)
    assert "ended COMPLETED_FAILED: 1 of its 2 runs failed or were canceled" in report, report
    assert "(fragile): " in report and "shard b is broken beyond repair" in report, report
