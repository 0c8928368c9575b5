"""A one-asset code location for the run monitoring test: its run records its process id, then waits
to be killed, holding a slot of the `gpu` pool (limit 1 in the config `viscon` writes). Small on purpose: the
test is about the instance, and this loads in a second."""

import os
import time
from pathlib import Path

import dagster as dg


@dg.asset(pool="gpu")
def waits_to_be_killed() -> None:
    Path(os.environ["VISCON_TEST_PID_DIR"], f"{os.getpid()}.pid").touch()
    time.sleep(600)


defs = dg.Definitions(assets=[waits_to_be_killed],
                      jobs=[dg.define_asset_job("waits", selection=[waits_to_be_killed])],
                      executor=dg.in_process_executor)  # the run's process is the one that runs the asset
