"""Dead runs on a real instance (the config `viscon` writes, SQLite): which STARTED runs are dead, what failing them
records and frees, and how a step's journal lease uses the run's status (viscon_dagster/dead_runs.py). The
processes and the daemon: test_killed_runs.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from tests.operations.harness import new_instance
from viscon_dagster.core.files.lease import LeaseHeld, LeaseRecord, PartitionLease, machine_id
from viscon_dagster.core.files.lease_stores import store_for
from viscon_dagster.dead_runs import (
    EXPIRES_TAG,
    WORKER_TAG,
    RunLease,
    fail_dead_runs,
    journal_checks,
    worker_tags,
)

ELSEWHERE = "another-host/boot/1"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: the pid names no process
    return child.pid


def started(instance, worker: tuple | None = None, status=dg.DagsterRunStatus.STARTED, tags=None) -> str:
    """A run of `status` whose process (pid, machine, lease expiry) is `worker`."""
    run_id = create_run_for_test(instance, job_name="shard_chain", status=status, tags=tags or {}).run_id
    if worker:
        instance.add_run_tags(run_id, worker_tags(run_id, *worker))
    return run_id


def failure_messages(instance, run_id: str) -> list[str]:
    return [e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]


def claimed(instance) -> list[str]:
    return [s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots]


@pytest.fixture
def instance(tmp_path):
    with new_instance(tmp_path / "home") as instance:  # the gpu pool, limit 1
        yield instance


def test_a_dead_run_is_failed_with_its_reason_and_its_pool_slot_freed(instance):
    now, here = time.time(), machine_id()
    killed = started(instance, (dead_pid(), here, now + 600))
    alive = started(instance, (os.getpid(), here, now + 600))
    lapsed = started(instance, (1, ELSEWHERE, now - 5))
    elsewhere = started(instance, (1, ELSEWHERE, now + 600))
    untagged = started(instance)  # not run by our executor: left to run monitoring
    finished = started(instance, (dead_pid(), here, now - 5), status=dg.DagsterRunStatus.SUCCESS)
    # a retry starts with its parent's tags: they do not describe its own process
    retry = started(instance, tags=instance.get_run_by_id(killed).tags)
    assert instance.event_log_storage.claim_concurrency_slot("gpu", killed, "captions").is_claimed
    assert not instance.event_log_storage.claim_concurrency_slot("gpu", alive, "qa_pairs").is_claimed  # blocked

    failed = dict(fail_dead_runs(instance))

    assert set(failed) == {killed, lapsed}
    assert failed[killed].startswith("its process (pid ") and failed[killed].endswith(" on this machine) is gone")
    assert failed[lapsed].startswith("its lease expired at ")
    for run_id in (killed, lapsed):
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        (message,) = failure_messages(instance, run_id)
        assert f"the process running this run is dead ({failed[run_id]})" in message
    for run_id, status in [(alive, "STARTED"), (elsewhere, "STARTED"), (untagged, "STARTED"), (retry, "STARTED"),
                           (finished, "SUCCESS")]:
        assert instance.get_run_by_id(run_id).status.value == status
    assert killed not in claimed(instance)  # freed at once, no daemon needed
    assert instance.event_log_storage.claim_concurrency_slot("gpu", alive, "qa_pairs").is_claimed
    assert fail_dead_runs(instance) == []  # failed once


@pytest.mark.slow
def test_a_running_process_holds_and_renews_its_run_lease(instance):
    run_id = started(instance)
    lease = RunLease(instance, run_id, ttl_s=3)
    lease.start()
    try:
        first = instance.get_run_by_id(run_id).tags
        assert first[WORKER_TAG] == f"{os.getpid()}@{machine_id()} run {run_id[:8]}"
        time.sleep(2.5)  # past a renewal (every ttl/3) but within the first expiry
        assert instance.get_run_by_id(run_id).tags[EXPIRES_TAG] > first[EXPIRES_TAG]
        assert fail_dead_runs(instance) == []  # its own process is alive
    finally:
        lease.stop()


def _plant(folder, run_id: str, expires_in: float):
    record = LeaseRecord(owner=f"run {run_id}", token="t", machine=ELSEWHERE, pid=1, acquired_at=time.time(),
                         expires_at=time.time() + expires_in)
    store_for(folder / "lease.json").create(record.dump())


def test_a_journal_lease_follows_the_status_of_its_holders_run(instance, tmp_path):
    folder = tmp_path / "captions" / "_journal" / "shard-0"

    def take():
        return PartitionLease(folder / "lease.json", owner="run rerun", subject="shard-0 of captions", ttl_s=60,
                              wait_s=0, checks=journal_checks(instance)).acquire()

    # a run that died on another machine and was failed there: its lease is taken at once, not in 10 minutes
    _plant(folder, started(instance, status=dg.DagsterRunStatus.FAILURE), expires_in=600)
    take().release()
    _plant(folder, started(instance, status=dg.DagsterRunStatus.CANCELED), expires_in=600)
    take().release()
    # one still running elsewhere keeps it
    working = started(instance, (1, ELSEWHERE, time.time() + 600))
    _plant(folder, working, expires_in=600)
    with pytest.raises(LeaseHeld, match=f"by run {working}"):
        take()
    store_for(folder / "lease.json").delete(store_for(folder / "lease.json").read()[1])
    # a dead holder's lease taken over: its run, still STARTED but dead, is failed by the step that took it
    dead = started(instance, (dead_pid(), machine_id(), time.time() + 600))
    _plant(folder, dead, expires_in=-1)
    take().release()
    assert instance.get_run_by_id(dead).status == dg.DagsterRunStatus.FAILURE
    assert "is gone" in failure_messages(instance, dead)[0]
