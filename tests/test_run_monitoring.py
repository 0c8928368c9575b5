"""Dead runs on the instance config `viscon` writes, with a real `dagster-daemon run`.

Dagster's default run launcher has no worker health check, so run monitoring alone does not see a
dead worker. What each kind of run gets:
- a run launched through the run launcher (UI, backfills, `dagster job launch`): its code server sees
  the worker die and fails the run at once;
- a run executed in the launching process (`dagster asset materialize`, `viscon demo`): nobody is left
  to report it; run monitoring fails it once it passes `max_runtime_seconds`.
Either way the `gpu` pool slot the dead run held is given back `free_slots_after_run_end_seconds` after its end.
(The project's own runs are failed sooner, by their run lease: tests/operations/test_killed_runs.py.)
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from viscon_dagster.instance_policy import LOCAL, apply_pool_limits
from viscon_dagster.local.instance import default_instance_yaml

BIN = Path(sys.executable).parent
DEFS = str(Path(__file__).with_name("run_monitoring_defs.py"))
WAIT_S = 240  # a bound on waiting for processes to start on a loaded machine, not a measurement


def wait_for(what, probe):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


def new_pid(pid_dir: Path, seen: set[int]) -> int:
    pids = wait_for("the run's process", lambda: {int(p.stem) for p in pid_dir.glob("*.pid")} - seen)
    (pid,) = pids
    return pid


def finished_run(home: Path, job: str) -> dg.DagsterRun:
    def probe():
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = [r for r in instance.get_runs() if r.job_name == job and r.is_finished]
            return runs[0] if runs else None
    return wait_for(f"run of {job} to finish", probe)


def engine_messages(home: Path, run_id: str) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [e.message for e in instance.all_logs(run_id)]


def gpu_slot_holders(home: Path) -> set[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return {s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}


def slot_given_back(home: Path, run_id: str) -> None:
    wait_for(f"the gpu slot of run {run_id} to be free", lambda: run_id not in gpu_slot_holders(home))
    assert gpu_slot_holders(home) == set()


@pytest.mark.slow
def test_killed_runs_are_marked_failed(tmp_path):
    home, pid_dir = tmp_path / "home", tmp_path / "pids"
    home.mkdir()
    pid_dir.mkdir()
    # the written config with intervals short enough for a test
    sizes = dataclasses.replace(LOCAL, poll_interval_seconds=1, max_runtime_seconds=20,
                                free_slots_after_run_end_seconds=1)
    (home / "dagster.yaml").write_text(default_instance_yaml(sizes))
    env = {**os.environ, "DAGSTER_HOME": str(home), "VISCON_TEST_PID_DIR": str(pid_dir)}
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the storage, before two processes race to make it
        apply_pool_limits(instance, sizes)  # the gpu pool's one slot, as `viscon` sets it
    daemon_log = (tmp_path / "daemon.log").open("w")  # kept by pytest's tmp_path for a look after a failure
    daemon = subprocess.Popen([BIN / "dagster-daemon", "run", "-f", DEFS], env=env, cwd=tmp_path,
                              stdout=daemon_log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # through the run launcher: the daemon dequeues it and launches it from its code server
        subprocess.run([BIN / "dagster", "job", "launch", "-f", DEFS, "-j", "waits",
                        "--tags", '{"dagster/max_runtime": "3600"}'],  # failed for the kill, not the runtime
                       env=env, cwd=tmp_path, check=True, capture_output=True, timeout=WAIT_S)
        pid = new_pid(pid_dir, set())
        assert len(gpu_slot_holders(home)) == 1  # the step holds the pool's only slot
        os.kill(pid, signal.SIGKILL)
        launched = finished_run(home, "waits")
        assert launched.status == dg.DagsterRunStatus.FAILURE
        assert any("was terminated by signal 9 (SIGKILL)" in m for m in engine_messages(home, launched.run_id))
        slot_given_back(home, launched.run_id)

        # in the launching process
        seen = {int(p.stem) for p in pid_dir.glob("*.pid")}
        cli = subprocess.Popen([BIN / "dagster", "asset", "materialize", "-f", DEFS, "--select", "waits_to_be_killed"],
                               env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert new_pid(pid_dir, seen) == cli.pid
        cli.kill()
        cli.wait()
        in_process = finished_run(home, "__ASSET_JOB")
        assert in_process.status == dg.DagsterRunStatus.FAILURE
        messages = engine_messages(home, in_process.run_id)
        assert "Canceling due to exceeding maximum runtime of 20 seconds." in messages
        slot_given_back(home, in_process.run_id)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=60)
        daemon_log.close()
