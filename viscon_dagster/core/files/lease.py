"""A lease in storage on one partition's model work, so that two runs of a partition never pay twice.

    with journal_lease(journal_dir, owner="run 1f2e…", ttl_s=600, wait_s=60):
        ...  # load the journal, ask only what it lacks, compact

The lease is one small JSON object (`<journal_dir>/lease.json`): who holds it, since when, until when.
It is taken with a conditional create (locally a hard link, which fails on an existing name; on S3 a
PUT with `If-None-Match: *`), renewed by a background thread while the work runs, and deleted on exit
only while it is still ours. Every change to an existing lease is a compare-and-swap on the version
last seen (S3: `If-Match: <ETag>`; locally the content digest, checked under an `flock` on a guard
file), so of two runs that find an expired lease only one takes it over. A lease past its expiry, or
held by a process of this machine that no longer exists (a SIGKILLed run), may be taken over; a
second run otherwise waits up to `wait_s`, then fails with who holds the partition. The layer that knows
the holders (Dagster runs) may add `HolderChecks`: a holder on another machine whose run is over (failed,
canceled) is taken over at once, and whoever took a dead holder's lease over is told so (to fail its run).

Expiry compares wall clocks of different machines: keep `ttl_s` well above any clock skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

from viscon_dagster.core.files.lease_stores import store_for

log = logging.getLogger(__name__)

LEASE_NAME = "lease.json"


class LeaseHeld(RuntimeError):
    """Another run holds the lease and did not let go within the wait."""


class LeaseLost(RuntimeError):
    """Our lease expired and another run took it over while we were working."""


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def machine_id() -> str | None:
    """This host, boot and PID namespace: within it a PID names one live process. None off Linux."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{pid_ns}"


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    try:  # a killed process its parent has not reaped yet holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def default_owner() -> str:
    return f"process {os.getpid()} on {socket.gethostname()}"


@dataclass(frozen=True)
class LeaseRecord:
    owner: str          # shown to whoever finds the partition taken, e.g. "run 1f2e…"
    token: str          # unique per acquisition
    machine: str | None
    pid: int
    acquired_at: float  # epoch seconds
    expires_at: float

    def dump(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def load(cls, data: bytes, where: str) -> LeaseRecord:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where} is not a lease record ({e}); delete it if no run is working on that "
                             "partition") from e

    def on(self, machine: str | None) -> bool:
        """Held by a process of `machine` (this one), whose PID can be checked."""
        return machine is not None and self.machine == machine

    def takeable(self, now: float, machine: str | None) -> str | None:
        """Why the lease may be taken over (expired, or its holder was a process of this machine that is
        gone); None while it stands."""
        if self.expires_at <= now:
            return f"its lease expired at {_iso(self.expires_at)}"
        if self.on(machine) and not process_alive(self.pid):
            return f"its process (pid {self.pid} on this machine) is gone"
        return None


@dataclass(frozen=True)
class HolderChecks:
    """What the layer that knows the holders adds to a lease (both optional, both may fail: then ignored).

    `finished(held)`: why the holder's work is over though its lease stands (its run failed or was canceled
    on another machine), else None. Asked only for a holder off this machine: here a live PID is proof that
    the work goes on (a process that outlived its run's coordinator is still asking).
    `took_over(held, why)`: called once a dead holder's lease was taken over, e.g. to fail its run."""
    finished: Callable[[LeaseRecord], str | None] | None = None
    took_over: Callable[[LeaseRecord, str], None] | None = None


# -- the lease --------------------------------------------------------------------------------
class PartitionLease:
    """Held between `acquire()` and `release()` (or as a context manager, sync or async)."""

    def __init__(self, path, owner: str, subject: str, ttl_s: float = 600.0, wait_s: float = 60.0,
                 poll_s: float = 1.0, renew_every_s: float | None = None, store=None,
                 checks: HolderChecks | None = None):
        if ttl_s <= 0 or wait_s < 0:
            raise ValueError(f"lease ttl must be > 0 and wait >= 0 (got ttl {ttl_s}, wait {wait_s})")
        self.path, self.owner, self.subject = path, owner, subject
        self.ttl_s, self.wait_s, self.poll_s = ttl_s, wait_s, poll_s
        self.renew_every_s = renew_every_s if renew_every_s is not None else ttl_s / 3
        self.store = store if store is not None else store_for(path)
        self.machine = machine_id()
        self.checks = checks or HolderChecks()
        self.record: LeaseRecord | None = None
        self.lost: str | None = None  # why, once another run took the lease over from us
        self._version: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _new_record(self, acquired_at: float | None = None) -> LeaseRecord:
        now = time.time()
        token = self.record.token if self.record is not None else uuid.uuid4().hex
        return LeaseRecord(owner=self.owner, token=token, machine=self.machine, pid=os.getpid(),
                           acquired_at=acquired_at or now, expires_at=now + self.ttl_s)

    def _held_message(self, held: LeaseRecord) -> str:
        return (f"{self.subject} is being materialized by {held.owner} (lease held since {_iso(held.acquired_at)}, "
                f"expires {_iso(held.expires_at)} unless renewed); run it again once that run has finished: its "
                f"answers are journaled, so nothing is paid twice. A dead run's lease is taken over once it expires "
                f"({self.path}).")

    def _try_take(self) -> tuple[str | None, LeaseRecord | None]:
        """(our version, None) when taken; (None, the holder's record) when held; (None, None) when it
        vanished between our create and read."""
        record = self._new_record()
        version = self.store.create(record.dump())
        if version is not None:
            self.record = record
            return version, None
        current = self.store.read()
        if current is None:
            return None, None
        held = LeaseRecord.load(current[0], str(self.path))
        why = held.takeable(time.time(), self.machine) or self._finished(held)
        if why:
            version = self.store.replace(record.dump(), current[1])
            if version is not None:
                log.warning("took over the lease on %s from %s: %s", self.subject, held.owner, why)
                self.record = record
                self._took_over(held, why)
                return version, None
        return None, held

    def _finished(self, held: LeaseRecord) -> str | None:
        if self.checks.finished is None or held.on(self.machine):
            return None
        try:
            return self.checks.finished(held)
        except Exception as e:  # the instance unreachable: the lease's expiry still decides
            log.warning("could not ask whether %s has finished: %s", held.owner, e)
            return None

    def _took_over(self, held: LeaseRecord, why: str) -> None:
        if self.checks.took_over is None:
            return
        try:
            self.checks.took_over(held, why)
        except Exception as e:  # the lease is ours either way
            log.warning("took over the lease from %s but could not report it: %s", held.owner, e)

    def acquire(self) -> Self:
        deadline = time.monotonic() + self.wait_s
        held, self.record = None, None
        while True:
            version, seen = self._try_take()
            if version is not None:
                break
            held = seen or held
            left = deadline - time.monotonic()
            if left <= 0 and held is not None:
                raise LeaseHeld(self._held_message(held))
            if seen is not None:
                time.sleep(min(self.poll_s, max(left, 0.0)))
        self._version, self.lost = version, None
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lease {self.subject}", daemon=True)
        self._renewer.start()
        return self

    def renew(self) -> bool:
        """Push the expiry out by `ttl_s`; False (and `lost` set) when another run took the lease over."""
        with self._lock:
            if self._version is None:
                return False
            record = self._new_record(acquired_at=self.record.acquired_at)
            version = self.store.replace(record.dump(), self._version)
            if version is None:
                current = self.store.read()
                other = LeaseRecord.load(current[0], str(self.path)).owner if current else "nobody"
                self.lost = (f"the lease on {self.subject} expired and was taken over (now held by {other}) while "
                             f"{self.owner} was still working: both may have asked the same requests")
                self._version = None
                return False
            self.record, self._version = record, version
            return True

    def _renew_loop(self) -> None:
        wait = self.renew_every_s
        while not self._stop.wait(wait):
            try:
                if not self.renew():
                    log.error("%s", self.lost)
                    return
                wait = self.renew_every_s
            except Exception as e:  # storage unreachable for a moment: try again soon, the expiry is ahead
                log.warning("could not renew the lease on %s: %s", self.subject, e)
                wait = self.renew_every_s / 4

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours (never someone else's)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        with self._lock:
            version, self._version = self._version, None
        if version is not None and not self.store.delete(version):
            log.warning("the lease on %s was no longer ours at release; left it in place", self.subject)

    @property
    def held(self) -> bool:
        return self._version is not None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()
        if self.lost and exc_type is None:
            raise LeaseLost(self.lost)

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.acquire)

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await asyncio.to_thread(self.__exit__, exc_type, exc, tb)


def journal_subject(journal_dir) -> str:
    """'partition <key> of <asset>' for the journal layout `<asset>/_journal/<partition>`."""
    parent = journal_dir.parent
    if parent.name == "_journal":
        return f"partition {journal_dir.name} of {parent.parent.name}"
    return f"the work journaled in {journal_dir}"


RUN_OWNER = "run "


def run_owner(run_id: str) -> str:
    return f"{RUN_OWNER}{run_id}"


def owner_run_id(owner: str) -> str | None:
    """The run id of a lease owner written by `journal_lease` ("run <id>"), else None."""
    return owner[len(RUN_OWNER):] if owner.startswith(RUN_OWNER) else None


def journal_lease(journal_dir, owner: str | None, ttl_s: float, wait_s: float, checks: HolderChecks | None = None):
    """The lease on the model work journaled in `journal_dir` (nothing to hold without a journal).
    `owner` is the Dagster run id when there is one; else this process."""
    if journal_dir is None:
        return contextlib.nullcontext()
    return PartitionLease(journal_dir / LEASE_NAME, owner=run_owner(owner) if owner else default_owner(),
                          subject=journal_subject(journal_dir), ttl_s=ttl_s, wait_s=wait_s, checks=checks)
