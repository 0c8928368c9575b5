"""The daemon `viscon` starts: the real `dagster-daemon` CLI, its backfill loop shortened to VISCON_DAEMON_LOOP_S.
(The daemon tests run it for real: tests/operations.)"""

import sys

import pytest

from viscon_dagster.local import daemon_process


def test_the_daemon_command_is_dagsters_cli_with_a_short_backfill_loop(monkeypatch, capsys):
    import dagster._daemon.controller as controller

    monkeypatch.setattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS", controller.DEFAULT_DAEMON_INTERVAL_SECONDS)
    monkeypatch.setenv(daemon_process.LOOP_ENV, "1.5")
    monkeypatch.setattr(sys, "argv", ["daemon_process", "--help"])
    with pytest.raises(SystemExit) as done:
        daemon_process.main()
    assert done.value.code == 0
    assert "run" in capsys.readouterr().out  # dagster-daemon's own commands
    assert controller.DEFAULT_DAEMON_INTERVAL_SECONDS == 1.5
