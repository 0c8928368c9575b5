"""`dagster-daemon` as `viscon` starts it on this machine: the real daemon CLI, with one change. Dagster's backfill
daemon sleeps a fixed 30 s between iterations (`dagster._daemon.controller.DEFAULT_DAEMON_INTERVAL_SECONDS`, not a
setting in dagster 1.13), and a backfill of a chain advances one iteration per layer of the graph, so most of a local
backfill's time (the demo's ten) would be that pause. Here it is `VISCON_DAEMON_LOOP_S` (default 3 s). Deployments
run the stock `dagster-daemon` (deploy/).

    python -m viscon_dagster.local.daemon_process run -w workspace.yaml
"""

import os
import sys

LOOP_ENV = "VISCON_DAEMON_LOOP_S"
DEFAULT_LOOP_S = 3.0


def main() -> int:
    import dagster._daemon.controller as controller
    from dagster._daemon.cli import main as daemon_main

    controller.DEFAULT_DAEMON_INTERVAL_SECONDS = float(os.environ.get(LOOP_ENV, "").strip() or DEFAULT_LOOP_S)
    sys.argv[0] = "dagster-daemon"
    return daemon_main()


if __name__ == "__main__":
    sys.exit(main())
