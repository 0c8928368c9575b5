"""The demo's step table: each step's wall time and share, a failed step marked, the load average beside it."""

import time

from viscon_dagster.demo.steps import StepLog


def test_the_step_table_says_where_the_time_went():
    log = StepLog()
    with log.step("fast"):
        pass
    with log.step("slow") as step:
        time.sleep(0.2)
        step.ok = False
    table = log.table()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"fast", "slow", "all"}
    assert "FAILED" in rows["slow"] and "ok" in rows["fast"]
    assert log.steps[1].seconds >= 0.2 > log.steps[0].seconds
    assert int(rows["slow"].split("|")[3].strip().rstrip("%")) >= 90  # its share of the total
    assert "load average (1, 5, 15 min) at the start" in table and "cores" in table
