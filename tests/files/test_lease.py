"""The partition lease on a local folder and on the S3 protocol (moto's ThreadedMotoServer on 127.0.0.1):
one holder at a time across threads and processes, expiry and dead-holder takeover, renewal, release."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from upath import UPath

from viscon_dagster.core.files.lease import (
    HolderChecks,
    LeaseHeld,
    LeaseLost,
    LeaseRecord,
    PartitionLease,
    journal_lease,
    journal_subject,
    machine_id,
)
from viscon_dagster.core.files.lease_stores import store_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "s3"])
def journal_dir(request, tmp_path):
    """`<root>/captions/_journal/shard-0` on a local folder or on a bucket of the loopback S3 server."""
    if request.param == "local":
        root = UPath(tmp_path.as_uri())
    else:
        name, _ = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("s3_server")
        root = UPath(f"s3://{name}/storage", key="testing", secret="testing",
                     client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    return root / "captions" / "_journal" / "shard-0"


def lease(journal_dir, owner: str, ttl_s: float = 60, wait_s: float = 0, **kw) -> PartitionLease:
    return PartitionLease(journal_dir / "lease.json", owner=f"run {owner}", subject=journal_subject(journal_dir),
                          ttl_s=ttl_s, wait_s=wait_s, **kw)


def stored(journal_dir) -> LeaseRecord | None:
    current = store_for(journal_dir / "lease.json").read()
    return LeaseRecord.load(current[0], "lease") if current else None


def test_every_write_to_the_lease_object_is_conditional(journal_dir):
    store = store_for(journal_dir / "lease.json")
    v1 = store.create(b'{"n": 1}')
    assert v1 is not None and store.create(b'{"n": 2}') is None  # exists: a second create loses
    v2 = store.replace(b'{"n": 3}', v1)
    assert v2 not in (None, v1)
    assert store.replace(b'{"n": 4}', v1) is None  # a taker that saw the old version loses
    assert store.delete(v1) is False and store.read() == (b'{"n": 3}', v2)  # not ours any more: kept
    assert store.delete(v2) is True and store.read() is None
    assert store.replace(b'{"n": 5}', v2) is None  # nothing to replace


def _race(leases: dict) -> dict[str, str]:
    """Every lease tries to acquire at the same moment: owner -> "held" or the refusal's message."""
    barrier, results = threading.Barrier(len(leases)), {}

    def race(owner):
        barrier.wait()
        try:
            leases[owner].acquire()
            results[owner] = "held"
        except LeaseHeld as e:
            results[owner] = str(e)

    threads = [threading.Thread(target=race, args=(o,)) for o in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.slow
def test_one_holder_among_threads_the_others_are_told_who(journal_dir):
    leases = {f"r{i}": lease(journal_dir, f"r{i}") for i in range(6)}
    results = _race(leases)
    winners = [o for o, r in results.items() if r == "held"]
    assert len(winners) == 1
    winner = winners[0]
    assert stored(journal_dir).owner == f"run {winner}"
    for owner, message in results.items():
        if owner != winner:
            assert message.startswith(f"partition shard-0 of captions is being materialized by run {winner} "
                                      "(lease held since ")
            assert ", expires " in message
    leases[winner].release()
    assert stored(journal_dir) is None
    with lease(journal_dir, "later"):  # free again
        assert stored(journal_dir).owner == "run later"


def _race_in_process(url, options, owner, barrier, results, done):
    lease = journal_lease(UPath(url, **options), owner, 60, 0)
    barrier.wait()
    try:
        lease.acquire()
    except LeaseHeld as e:
        results.put((owner, str(e)))
        return
    results.put((owner, "held"))
    done.wait(60)
    lease.release()


@pytest.mark.slow
def test_one_holder_among_processes(journal_dir):
    ctx = multiprocessing.get_context("spawn")
    barrier, results, done = ctx.Barrier(4), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_race_in_process, args=(str(journal_dir), dict(journal_dir.storage_options),
                                                         f"p{i}", barrier, results, done)) for i in range(4)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    done.set()
    for p in procs:
        p.join(60)
    winners = [o for o, r in outcomes.items() if r == "held"]
    assert len(winners) == 1 and all(p.exitcode == 0 for p in procs)
    assert all(f"is being materialized by run {winners[0]} " in r for o, r in outcomes.items() if o != winners[0])
    assert stored(journal_dir) is None  # the winner released it on its way out


@pytest.mark.slow
def test_a_second_run_waits_for_the_lease_and_gets_it_once_released(journal_dir):
    first = lease(journal_dir, "first").acquire()
    second = lease(journal_dir, "second", wait_s=60, poll_s=0.05)
    waiter = threading.Thread(target=second.acquire)
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive() and stored(journal_dir).owner == "run first"  # still waiting: first holds it
    releasing_at = time.time()  # before release(): the waiter may take the lease before release() returns
    first.release()
    waiter.join(60)
    assert second.held and stored(journal_dir).owner == "run second"
    # stamped just before its winning create, which lands after release() even when the stamp is a moment
    # earlier (a thread descheduled between the two on a loaded machine)
    assert second.record.acquired_at >= releasing_at - 0.25
    second.release()


def test_a_bounded_wait_ends_with_the_holder_named(journal_dir):
    with lease(journal_dir, "first"):
        with pytest.raises(LeaseHeld, match="partition shard-0 of captions is being materialized by run first"):
            lease(journal_dir, "second", wait_s=0.3, poll_s=0.05).acquire()
        assert stored(journal_dir).owner == "run first"


def _plant(journal_dir, owner: str, expires_in: float, machine: str = "another-host/boot/1", pid: int = 1):
    record = LeaseRecord(owner=owner, token=uuid.uuid4().hex, machine=machine, pid=pid,
                         acquired_at=time.time() - 3600, expires_at=time.time() + expires_in)
    assert store_for(journal_dir / "lease.json").create(record.dump()) is not None


@pytest.mark.slow
def test_an_expired_lease_is_taken_over_by_exactly_one_of_many(journal_dir):
    _plant(journal_dir, "run dead", expires_in=-1)
    leases = {f"t{i}": lease(journal_dir, f"t{i}") for i in range(5)}
    results = _race(leases)
    winners = [o for o, r in results.items() if r == "held"]
    assert len(winners) == 1 and stored(journal_dir).owner == f"run {winners[0]}"
    leases[winners[0]].release()


def test_an_unexpired_lease_of_another_machine_is_not_taken(journal_dir):
    _plant(journal_dir, "run elsewhere", expires_in=600, pid=os.getpid() + 10_000_000)
    with pytest.raises(LeaseHeld, match="being materialized by run elsewhere"):
        lease(journal_dir, "mine").acquire()
    assert stored(journal_dir).owner == "run elsewhere"


CHILD = """
import json, sys, time
from upath import UPath
from viscon_dagster.core.files.lease import journal_lease
lease = journal_lease(UPath(sys.argv[1], **json.loads(sys.argv[2])), "killed", 600, 0).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_the_lease_of_a_killed_process_on_this_machine_is_taken_at_once(journal_dir):
    import json

    options = json.dumps(dict(journal_dir.storage_options))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(journal_dir), options], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeld, match="by run killed"):  # alive: held
        lease(journal_dir, "mine").acquire()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert stored(journal_dir).owner == "run killed"  # nobody released it: it died holding it
    with lease(journal_dir, "mine"):  # far from its expiry, yet its holder is gone
        assert stored(journal_dir).owner == "run mine"


@pytest.mark.slow
def test_renewal_keeps_the_lease_past_its_first_expiry(journal_dir):
    holder = lease(journal_dir, "long", ttl_s=2.0, renew_every_s=0.1).acquire()
    first_expiry = holder.record.expires_at
    deadline = time.monotonic() + 30
    while stored(journal_dir).expires_at <= first_expiry and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored(journal_dir).expires_at > first_expiry  # renewed in the background
    time.sleep(max(0.0, first_expiry - time.time()) + 0.2)
    with pytest.raises(LeaseHeld, match="by run long"):
        lease(journal_dir, "other").acquire()
    renewed = stored(journal_dir)
    assert renewed.owner == "run long" and renewed.token == holder.record.token
    assert renewed.acquired_at == holder.record.acquired_at
    holder.release()
    assert stored(journal_dir) is None


def test_a_lease_taken_over_is_not_deleted_by_its_old_holder_who_fails_loudly(journal_dir):
    old = lease(journal_dir, "slow", ttl_s=0.05, renew_every_s=3600)
    with pytest.raises(LeaseLost, match="taken over \\(now held by run new\\) while run slow was still working"):
        with old:
            time.sleep(0.2)  # stalled past its expiry without renewing
            new = lease(journal_dir, "new").acquire()
            assert old.renew() is False
    assert stored(journal_dir).owner == "run new" and stored(journal_dir).token == new.record.token
    new.release()
    assert stored(journal_dir) is None


@pytest.mark.slow
def test_released_when_the_work_raises(journal_dir):
    with pytest.raises(RuntimeError, match="the work failed"), lease(journal_dir, "crashing"):
        assert stored(journal_dir).owner == "run crashing"
        raise RuntimeError("the work failed")
    assert stored(journal_dir) is None


def test_async_use_releases_too(journal_dir):
    import asyncio

    async def work():
        async with journal_lease(journal_dir, "async", 60, 0) as held:
            assert held.held and stored(journal_dir).owner == "run async"

    asyncio.run(work())
    assert stored(journal_dir) is None


def test_default_owner_is_this_process(journal_dir):
    with journal_lease(journal_dir, None, 60, 0):
        with pytest.raises(LeaseHeld, match=f"by process {os.getpid()} on "):
            journal_lease(journal_dir, None, 60, 0).acquire()


def test_a_lease_object_that_is_not_a_lease_is_an_error_not_a_takeover(journal_dir):
    assert store_for(journal_dir / "lease.json").create(b"not json") is not None
    with pytest.raises(ValueError, match="lease.json is not a lease record"):
        lease(journal_dir, "mine").acquire()


def test_unsupported_storage_and_settings_are_errors(tmp_path):
    with pytest.raises(ValueError, match="need a local folder or S3, not memory://"):
        journal_lease(UPath("memory://x/captions/_journal/s"), "r", 60, 0)
    with pytest.raises(ValueError, match="ttl must be > 0"):
        journal_lease(UPath(tmp_path.as_uri()) / "j", "r", 0, 0)
    assert journal_lease(None, "r", 60, 0).__enter__() is None  # no journal, nothing to lease


@pytest.mark.slow
def test_a_holder_whose_work_is_over_elsewhere_is_taken_over_at_once_and_reported(journal_dir):
    """`HolderChecks`: the layer that knows the holders (Dagster runs) says a holder of another machine is done."""
    over = {"run failed-elsewhere": "its run is FAILURE in the Dagster instance"}
    asked, told = [], []

    def finished(held):
        asked.append(held.owner)
        return over.get(held.owner)

    checks = HolderChecks(finished=finished, took_over=lambda held, why: told.append((held.owner, why)))
    _plant(journal_dir, "run failed-elsewhere", expires_in=600)  # far from expiry, another machine
    with lease(journal_dir, "mine", checks=checks):
        assert stored(journal_dir).owner == "run mine"
    assert told == [("run failed-elsewhere", "its run is FAILURE in the Dagster instance")]

    _plant(journal_dir, "run working-elsewhere", expires_in=600)
    with pytest.raises(LeaseHeld, match="by run working-elsewhere"):
        lease(journal_dir, "mine", checks=checks).acquire()
    assert asked == ["run failed-elsewhere", "run working-elsewhere"]


def test_a_live_holder_on_this_machine_is_never_taken_whatever_its_run_says(journal_dir):
    """Here a live PID is proof of work going on (a step process that outlived its run's coordinator): the
    holder checks are not asked, and the holder keeps the lease."""
    def finished(held):
        raise AssertionError("asked about a holder of this machine")

    _plant(journal_dir, "run orphaned", expires_in=600, machine=machine_id(), pid=os.getpid())
    with pytest.raises(LeaseHeld, match="by run orphaned"):
        lease(journal_dir, "mine", checks=HolderChecks(finished=finished)).acquire()


@pytest.mark.slow
def test_a_dead_holders_lease_is_taken_with_its_reason_and_failing_checks_change_nothing(journal_dir):
    def broken(*args):
        raise ConnectionError("the instance is unreachable")

    told = []
    _plant(journal_dir, "run expired", expires_in=-1)
    with lease(journal_dir, "mine", checks=HolderChecks(took_over=lambda held, why: told.append(why))):
        pass
    assert told and told[0].startswith("its lease expired at ")
    _plant(journal_dir, "run expired", expires_in=-1)
    with lease(journal_dir, "mine", checks=HolderChecks(finished=broken, took_over=broken)):  # logged, not raised
        assert stored(journal_dir).owner == "run mine"
    _plant(journal_dir, "run elsewhere", expires_in=600)
    with pytest.raises(LeaseHeld, match="by run elsewhere"):  # unknown: the expiry decides
        lease(journal_dir, "mine", checks=HolderChecks(finished=broken)).acquire()
