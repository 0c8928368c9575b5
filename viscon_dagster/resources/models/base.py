"""The one model interface every stage calls; backends differ only in `_generate`.

    backend.generate(requests, journal_dir=storage.path("captions", "_journal", partition_key))
        -> list[Response]   (same order as `requests`)

The base class owns what every backend shares: fingerprints, the pay-once journal (answers already
journaled are returned without a call, each new answer is journaled the moment it arrives),
de-duplication of identical requests within a call, the rule that fails a partition on systemic
faults (`core/models/failures.py`: a dead server, a wrong key, an unknown model, the same rejection of
every request are not data rows), the sync wrapper assets use, and for local engines the helpers that
keep one bad request (an unreadable image, a prompt the engine refuses) from failing its batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

import dagster as dg
from pydantic import Field, PrivateAttr

from viscon_dagster.core.files.lease import HolderChecks, journal_lease
from viscon_dagster.core.models.accounting import PriceTable, summarize
from viscon_dagster.core.models.failures import FailureTally, redact
from viscon_dagster.core.models.gc_tuning import gc_tuned_for_throughput
from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.labels import model_label
from viscon_dagster.core.models.rejections import isolate
from viscon_dagster.core.models.request import Request, Response, unreadable_image

# `await emit(i, response)` returns False once the call is stopping (a fatal failure, or more failures
# than tolerated): the backend then asks nothing more; what is in flight may finish and is journaled
Emit = Callable[[int, Response], Awaitable[bool]]


class _GroupWriter:
    """Journals answers as they arrive. Answers that arrive while a write is under way go out together
    in the next write (group commit): at low rates one write per answer, under load one per burst,
    and at most one write's worth of answers is at risk if the process dies. Writes run on their own
    thread: on the default pool they would queue behind the image reads of every request in flight."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self.pending: list[Response] = []
        self.task: asyncio.Task | None = None
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal")

    def add(self, response: Response) -> None:
        self.pending.append(response)
        if self.task is None or self.task.done():
            if self.task is not None and self.task.exception():
                raise self.task.exception()
            self.task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            await asyncio.get_running_loop().run_in_executor(self.pool, self.journal.put_many, batch)

    async def close(self) -> None:
        while self.task is not None and not self.task.done():
            await self.task
        self.pool.shutdown(wait=False)
        if self.task is not None and self.task.exception():
            raise self.task.exception()  # storage failing is systemic: fail the partition, loudly


def run_sync(coro):
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class ModelBackend(dg.ConfigurableResource):
    """Base of all backends. `model` is the id the server knows, or a checkpoint path for local ones."""

    model: str = Field(description="model id (HTTP/batch) or checkpoint id/path (vLLM, transformers)")
    price_per_mtok: dict[str, list[float]] = Field(
        default_factory=dict, description="USD per 1M [input, output] tokens by model id, over the defaults")
    batch_discount: float = Field(0.5, description="fraction off for batch API calls")
    compact_journal: bool = Field(True, description="fold journal entries into one segment after a call")
    model_label: str | None = Field(
        None, description="id recorded in fingerprints and rows (default: a hub id as it is, a local checkpoint "
                          "as <folder>@<digest of its files>), e.g. recipe@sha for a trained one")
    tune_gc: bool = Field(True, description="during a call, freeze the objects alive at its start and run young "
                                            "GC collections less often (core/models/gc_tuning.py)")
    max_failure_fraction: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of a partition's requests that may fail for systemic reasons (server down, timeouts, "
                    "5xx or 429 after retries) and still pass as `error` rows; more fails the partition. A wrong "
                    "key, an unknown model or an exhausted quota always fail it, at the first occurrence")
    systemic_after_n_bad_requests: int = Field(
        10, ge=0,
        description="when the first this many requests a call asks (or every request of a smaller partition, at "
                    "least 2) are rejected (400, context too long) with the same message before any answer, the "
                    "rejection is a configuration fault, not rows: the call stops and the partition fails naming "
                    "the message (core/models/failures.py). 0: rejections are always rows")
    lease_ttl_s: float = Field(600.0, description="a partition's lease (core/files/lease.py) lapses this long after "
                                                  "its last renewal (every third of it while working), so a "
                                                  "dead run does not hold the partition longer")
    lease_wait_s: float = Field(60.0, description="how long a second run of a partition waits for its lease "
                                                  "before failing with the run that holds it")

    _last_wall_s: float = PrivateAttr(0.0)
    _model_id: str | None = PrivateAttr(None)

    @property
    def backend_name(self) -> str:
        return type(self).__name__

    @property
    def model_id(self) -> str:
        """The id that enters fingerprints and rows: `model_label`, else the hub id, else `<folder>@<digest>`
        of a local checkpoint (computed once)."""
        if self._model_id is None:
            self._model_id = self.model_label or model_label(self.model)
        return self._model_id

    # -- what subclasses implement ------------------------------------------------------------
    async def _generate(self, requests: list[Request], fingerprints: list[str], emit: Emit,
                        journal: Journal | None) -> None:
        """Answer every request, calling `await emit(i, response)` as each answer arrives; once it returns
        False, ask nothing more. Raise only when the backend itself fails (the partition then fails)."""
        raise NotImplementedError

    # -- the interface ------------------------------------------------------------------------
    async def agenerate(self, requests: Sequence[Request], journal_dir=None,
                        on_response: Callable[[Response], None] | None = None,
                        lease_owner: str | None = None, lease_checks: HolderChecks | None = None) -> list[Response]:
        """Answers for `requests`, in order; journaled answers are reused, new ones journaled at once.
        The journal's partition is leased meanwhile, so a second run of it waits or fails instead of paying
        again; `lease_owner` (the Dagster run id) is who other runs are told holds it; `lease_checks` tell
        whether a holder's run is over (dead_runs.journal_checks)."""
        with gc_tuned_for_throughput() if self.tune_gc else contextlib.nullcontext():
            async with journal_lease(journal_dir, lease_owner, self.lease_ttl_s, self.lease_wait_s, lease_checks):
                return await self._agenerate(requests, journal_dir, on_response)

    async def _agenerate(self, requests, journal_dir, on_response) -> list[Response]:
        t0 = time.perf_counter()
        journal = Journal(journal_dir) if journal_dir is not None else None
        known = await asyncio.to_thread(journal.load) if journal else {}
        fps = [r.fingerprint(self.model_id) for r in requests]
        out: list[Response | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}  # fingerprint -> positions (identical requests asked once)
        for i, fp in enumerate(fps):
            if fp in known:
                out[i] = known[fp].model_copy(update={"cached": True})
            else:
                todo.setdefault(fp, []).append(i)
        firsts = [idx[0] for idx in todo.values()]
        writer = _GroupWriter(journal) if journal is not None else None
        tally = FailureTally(len(requests), self.max_failure_fraction, self.systemic_after_n_bad_requests,
                             asked=len(firsts), from_journal=len(requests) - sum(map(len, todo.values())))

        async def emit(j: int, response: Response) -> bool:
            i = firsts[j]
            if writer is not None and response.journaled():
                writer.add(response)  # first: nothing else may delay an answer's way to the journal
            for k in todo[fps[i]]:
                out[k] = response
            tally.add(response, len(todo[fps[i]]))
            if on_response:
                on_response(response)
            return not tally.stop

        crash: Exception | None = None
        if firsts:
            try:
                await self._generate([requests[i] for i in firsts], [fps[i] for i in firsts], emit, journal)
            except Exception as e:  # the backend itself failed (no model, OOM, API down): after journaling, fail
                crash = e
            finally:
                if writer is not None:
                    await writer.close()
        if journal is not None and self.compact_journal and firsts:
            await asyncio.to_thread(journal.compact)
        self._last_wall_s = time.perf_counter() - t0
        failure = tally.error(f"{self.backend_name} (model {self.model_id})", out, crash, self._secrets())
        if failure is not None:
            raise failure from crash
        missing = [i for i, r in enumerate(out) if r is None]
        if missing:
            raise RuntimeError(f"{self.backend_name} returned no response for {len(missing)} requests")
        return out  # type: ignore[return-value]

    def generate(self, requests: Sequence[Request], journal_dir=None,
                 on_response: Callable[[Response], None] | None = None,
                 lease_owner: str | None = None, lease_checks: HolderChecks | None = None) -> list[Response]:
        """Sync wrapper of `agenerate`, for assets."""
        return run_sync(self.agenerate(requests, journal_dir, on_response, lease_owner, lease_checks))

    def metadata(self, responses: Sequence[Response], remaining_partitions: int = 0) -> dict:
        """Flat asset metadata (usage, failures, latency, USD, projection) of the last `generate` call."""
        return summarize(responses, self.price_table(), wall_s=self._last_wall_s,
                         remaining_partitions=remaining_partitions)

    def price_table(self) -> PriceTable:
        table = PriceTable(batch_discount=self.batch_discount)
        table.prices.update({k: (float(v[0]), float(v[1])) for k, v in self.price_per_mtok.items()})
        return table

    # -- helpers for subclasses ---------------------------------------------------------------
    def _secrets(self) -> list[str]:
        """Values that must never reach a row, a log or a message (e.g. an API key)."""
        return []

    async def _read_images(self, positions, requests: Sequence[Request], fingerprints: Sequence[str],
                           emit: Emit) -> dict[int, list] | None:
        """{position: its request's images (PIL)} for local engines; a request with an image that cannot be
        read (missing, not an image) is a row instead. None once the call is stopping."""
        def read(r: Request) -> list | OSError:
            try:
                return [i.pil() for i in r.images()]
            except OSError as e:  # PIL's UnidentifiedImageError is one
                return e

        positions = list(positions)
        # read and decoded in parallel (Pillow releases the GIL while it decodes): one thread would feed a fast
        # engine at ~1 core's pace (docs/benchmarks.md, the feeding benchmark)
        read_all = await asyncio.gather(*(asyncio.to_thread(read, requests[j]) for j in positions))
        images: dict[int, list] = {}
        for j, got in zip(positions, read_all, strict=True):
            if not isinstance(got, OSError):
                images[j] = got
            elif not await emit(j, self._response(fingerprints[j], status="error", error_kind="image_unreadable",
                                                  error=unreadable_image(got, requests[j].images()))):
                return None
        return images

    async def _emit_isolating(self, positions: list[int], run: Callable[[list[int]], Awaitable[list[Response]]],
                              fingerprints: Sequence[str], emit: Emit) -> bool:
        """Answer `positions` as one batch with `run`; a request the engine refuses (ValueError) is a row with
        the engine's message and the rest of the batch is answered (`core/models/rejections.py`). False once
        the call is stopping."""
        async with contextlib.aclosing(isolate(positions, run)) as parts:
            async for part, result in parts:
                for n, j in enumerate(part):
                    resp = result[n] if isinstance(result, list) else self._response(
                        fingerprints[j], status="error", error_kind=result[0], error=result[1])
                    if not await emit(j, resp):
                        return False
        return True

    def _response(self, fingerprint: str, **kw) -> Response:
        if kw.get("error"):
            kw["error"] = redact(kw["error"], self._secrets())
        return Response(fingerprint=fingerprint, model=self.model_id, backend=self.backend_name,
                        created_at=time.time(), **kw)
