"""Dead runs: a run whose process died (SIGKILL, OOM, a lost machine) is marked FAILURE and its pool slots freed.

A run executed in the launching process (`dagster asset materialize`, `dg launch` without a daemon, `viscon
demo`'s in-process steps) has nobody left to report its death: it would stay STARTED, keep its `gpu` pool slot
and its run-queue slot, and every later GPU step would wait forever ("Step blocked by limit for pool gpu").

So the process that executes a run's plan holds a lease on the run, kept as two run tags:
`viscon/worker` (`<pid>@<machine id> run <run id[:8]>`, core/files/lease.machine_id; the run id because a retry
starts with its parent's tags) and `viscon/worker_expires` (UTC, renewed every third of `VISCON_RUN_LEASE_TTL_S`,
default 600 s). A STARTED run whose lease is
takeable — expired, or naming a process of this machine that is gone — is dead: `fail_dead_runs` reports
its failure with the reason and frees its concurrency slots at once. It runs
- in every run, as it starts and at each renewal (`with_run_lease` wraps the code location's executor): the
  rerun of a killed partition frees the slot it is about to wait for, without a daemon;
- in the `viscon_dead_runs` sensor (automation.py), when a daemon runs;
- in the step that takes a dead holder's journal lease over (`journal_checks`), for the run that held it.
`journal_checks` also lets a step take over at once the journal lease of a run that is FAILURE or
CANCELED in the instance (it died on another machine), instead of waiting for the lease to expire.

A step process that outlives its run's process (the multiprocess executor's child, when only the parent was
killed) keeps its journal lease while it lives: a rerun waits for it, and pays nothing twice.
"""

from __future__ import annotations

import calendar
import logging
import os
import threading
import time
from collections.abc import Iterator

import dagster as dg

from viscon_dagster.core.files.lease import HolderChecks, LeaseRecord, machine_id, owner_run_id
from viscon_dagster.settings import SettingError

log = logging.getLogger(__name__)

WORKER_TAG = "viscon/worker"
EXPIRES_TAG = "viscon/worker_expires"
TTL_ENV = "VISCON_RUN_LEASE_TTL_S"
DEFAULT_TTL_S = 600
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def lease_ttl_s() -> int:
    value = os.environ.get(TTL_ENV, "").strip() or str(DEFAULT_TTL_S)
    if not value.isdigit() or int(value) < 3:
        raise SettingError(f"{TTL_ENV}={value!r}: expected a whole number of seconds (≥ 3)")
    return int(value)


def worker_tags(run_id: str, pid: int, machine: str | None, expires_at: float) -> dict[str, str]:
    return {WORKER_TAG: f"{pid}@{machine or ''} run {run_id[:8]}",
            EXPIRES_TAG: time.strftime(_TIME, time.gmtime(expires_at))}


def worker_lease(run: dg.DagsterRun) -> LeaseRecord | None:
    """The lease a run's process holds on it, from its tags; None for a run no viscon executor ran."""
    worker, expires = run.tags.get(WORKER_TAG), run.tags.get(EXPIRES_TAG)
    if not worker or not expires:
        return None
    holder, _, of_run = worker.partition(" run ")
    if of_run != run.run_id[:8]:  # a retry's copy of its parent's tags, until its own process starts
        return None
    pid, _, machine = holder.partition("@")
    try:
        expires_at = calendar.timegm(time.strptime(expires, _TIME))
        return LeaseRecord(owner=f"run {run.run_id}", token="", machine=machine or None, pid=int(pid),
                           acquired_at=0.0, expires_at=float(expires_at))
    except ValueError:
        return None


def dead_reason(run: dg.DagsterRun, now: float | None = None, machine: str | None = None) -> str | None:
    """Why a STARTED run is dead (its worker's lease is takeable), else None."""
    if run.status != dg.DagsterRunStatus.STARTED:
        return None
    lease = worker_lease(run)
    if lease is None:
        return None
    return lease.takeable(time.time() if now is None else now, machine or machine_id())


def failure_message(why: str) -> str:
    return (f"Marked failed by viscon: the process running this run is dead ({why}), so it will never finish. "
            "Its pool slots are freed; rerun its partitions: every model answer already journaled is reused, "
            "not paid again.")


def fail_dead_run(instance: dg.DagsterInstance, run_id: str, why: str) -> bool:
    """Mark a STARTED run FAILURE with `why` and free its concurrency slots; False when it is no longer STARTED."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.status != dg.DagsterRunStatus.STARTED:
        return False
    instance.report_run_failed(run, failure_message(why))
    # Dagster frees a dead run's slots only `free_slots_after_run_end_seconds` after its end, and only
    # with a daemon: free them now, a waiting step may be blocked on them
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return True


def fail_dead_runs(instance: dg.DagsterInstance, skip: frozenset[str] = frozenset(),
                   now: float | None = None) -> list[tuple[str, str]]:
    """Fail every dead STARTED run of the instance (see the module doc); [(run id, why)] of those failed."""
    machine = machine_id()
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if run.run_id in skip:
            continue
        why = dead_reason(run, now, machine)
        if why and fail_dead_run(instance, run.run_id, why):
            failed.append((run.run_id, why))
    return failed


def journal_checks(instance: dg.DagsterInstance) -> HolderChecks:
    """The holder checks of a journal lease (core/files/lease.py) whose owners are runs of `instance`."""

    def finished(held: LeaseRecord) -> str | None:
        run_id = owner_run_id(held.owner)
        run = instance.get_run_by_id(run_id) if run_id else None
        if run is not None and run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
            return f"its run is {run.status.value} in the Dagster instance"
        return None

    def took_over(held: LeaseRecord, why: str) -> None:
        run_id = owner_run_id(held.owner)
        run = instance.get_run_by_id(run_id) if run_id else None
        dead = dead_reason(run) if run is not None else None
        if dead and fail_dead_run(instance, run.run_id, dead):
            log.warning("run %s held a lease it could no longer use (%s) and was marked failed: %s", run_id, why,
                        dead)

    return HolderChecks(finished=finished, took_over=took_over)


class RunLease:
    """Held by the process executing a run's plan, from its start to its end (see the module doc)."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, ttl_s: float | None = None):
        self.instance, self.run_id = instance, run_id
        self.ttl_s = float(ttl_s or lease_ttl_s())
        self.machine, self.pid = machine_id(), os.getpid()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> None:
        self.instance.add_run_tags(self.run_id,
                                   worker_tags(self.run_id, self.pid, self.machine, time.time() + self.ttl_s))

    def sweep(self) -> list[tuple[str, str]]:
        """Fail the other dead runs of the instance (this one's slot may be what they hold)."""
        return fail_dead_runs(self.instance, skip=frozenset({self.run_id}))

    def _loop(self) -> None:
        wait = self.ttl_s / 3
        while not self._stop.wait(wait):
            try:
                self.renew()
                for run_id, why in self.sweep():
                    log.warning("marked run %s failed, its process is dead (%s); its pool slots are free again",
                                run_id, why)
                wait = self.ttl_s / 3
            except Exception as e:  # the instance unreachable for a moment: try again soon, the expiry is ahead
                log.warning("could not renew the lease on run %s: %s", self.run_id, e)
                wait = self.ttl_s / 12

    def start(self) -> list[tuple[str, str]]:
        self.renew()
        failed = self.sweep()
        self._thread = threading.Thread(target=self._loop, name=f"run lease {self.run_id}", daemon=True)
        self._thread.start()
        return failed

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class _LeasedExecutor(dg.Executor):
    """Dagster's executor, with the run lease held while it executes the plan."""

    def __init__(self, inner: dg.Executor):
        self._inner = inner

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def execute(self, plan_context, execution_plan) -> Iterator[dg.DagsterEvent]:
        lease = RunLease(plan_context.instance, plan_context.run_id)
        for run_id, why in lease.start():
            plan_context.log.warning(f"Run {run_id} was marked failed: its process is dead ({why}); its pool "
                                     "slots are free again.")
        try:
            yield from self._inner.execute(plan_context, execution_plan)
        finally:
            lease.stop()


def with_run_lease(executor_def: dg.ExecutorDefinition | None) -> dg.ExecutorDefinition:
    """`executor_def` (Dagster's default when None: multiprocess, or in process where run config says
    `execution: {config: {in_process: {}}}`) whose runs hold their run lease: same name, config and
    requirements, so run config written for it still applies."""
    inner = executor_def or dg.multi_or_in_process_executor

    def create(init_context) -> dg.Executor:
        return _LeasedExecutor(inner.executor_creation_fn(init_context))

    return dg.ExecutorDefinition(name=inner.name, config_schema=inner.config_schema,
                                 requirements=inner.get_requirements, executor_creation_fn=create,
                                 description=inner.description)
