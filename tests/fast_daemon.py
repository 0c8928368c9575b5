"""The daemon the tests run: `viscon`'s own, the real `dagster-daemon` CLI with a short backfill loop
(viscon_dagster/local/daemon_process.py)."""

from viscon_dagster.local.daemon import DAEMON_COMMAND as COMMAND  # noqa: F401
