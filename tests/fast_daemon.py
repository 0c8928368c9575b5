"""`dagster-daemon` with a 3-second backfill loop, for tests.

The backfill daemon sleeps a fixed 30 s between iterations (`dagster._daemon.controller.
DEFAULT_DAEMON_INTERVAL_SECONDS`, not configurable in dagster 1.13), and a backfill of a chain advances one
iteration per layer of the graph, so a daemon test spends most of its time asleep. This is the real
`dagster-daemon run` (same CLI, daemons, run queue, launcher and code server) with only that constant
shortened: `python tests/fast_daemon.py run -w workspace.yaml`.
"""

import sys

import dagster._daemon.controller as controller

LOOP_S = 3
controller.DEFAULT_DAEMON_INTERVAL_SECONDS = LOOP_S
COMMAND = [sys.executable, __file__]  # instead of [".venv/bin/dagster-daemon"]

if __name__ == "__main__":
    from dagster._daemon.cli import main

    sys.argv[0] = "dagster-daemon"
    sys.exit(main())
