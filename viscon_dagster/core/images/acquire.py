"""Image acquisition for one shard: the entry point the `images` asset calls.

    fetch_images(
        requests: Iterable[ImageRequest],            # (doc_id, page_url, position, image_url, alt_text)
        store: UPath,                                # storage root (file:// or s3://)
        settings: ImageSettings = ImageSettings(),
        seen_url_counts: Mapping[str, int] | None = None,  # url -> doc count from earlier shards
        *,
        shard: str = "default",                      # names the resume journal
    ) -> ImageResult

`afetch_images` is the same coroutine for callers that already run an event loop.

Writes `images/<sha256[:2]>/<sha256>.jpg` (sha256 of the original bytes) and the resume journal
`journal/images/<shard>/part-*.parquet` under `store`. `ImageResult.table` has one row per request,
in request order (columns: `RESULT_SCHEMA`); `ImageResult.url_doc_counts` is this shard's
url -> document count, for `save_url_doc_counts(store, shard, ...)`.

Raises `ImageStorageError` (the only failure of a shard) when the store cannot be written; every
other problem is a row status. When the store fails, the first failure is the one raised (with its "a
rerun resumes" hint); a failure of the last journal flush after it is added as a note and logged.
Each JPEG is written whole (`core/files/atomic.py`): a reader or a rerun never finds a torn image.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
from upath import UPath

from . import statuses as st
from .dedup import find_duplicates, url_doc_counts
from .journal import OUTCOME_SCHEMA, ImageJournal
from .outcomes import ImageStorageError, image_path, outcome
from .settings import PROCESS_POOL_MIN_URLS, ImageSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRequest:
    doc_id: str
    page_url: str
    position: int  # index of the image in the document's interleaved sequence
    image_url: str
    alt_text: str | None = None


# the request's columns, then a URL's outcome (as journaled), then what depends on the shard
RESULT_SCHEMA = pa.schema([
    ("doc_id", pa.string()),
    ("position", pa.int32()),
    ("page_url", pa.string()),
    ("alt_text", pa.string()),
    *(f for f in OUTCOME_SCHEMA if f.name != "fingerprint"),
    ("duplicate_of", pa.string()),  # sha256 of the kept image, for status duplicate
    ("url_doc_count", pa.int32()),  # documents using this URL, earlier shards and this one
    ("from_journal", pa.bool_()),  # outcome reused from an earlier run
])


@dataclass
class ImageResult:
    table: pa.Table
    url_doc_counts: dict[str, int]  # this shard's url -> number of documents
    status_counts: dict[str, int]  # over rows (requests)
    bytes_in: int  # downloaded in this run
    bytes_out: int  # stored in this run
    elapsed_s: float
    images_per_s: float  # images fetched and normalised in this run, per second
    urls_fetched: int  # URLs processed in this run
    urls_resumed: int  # URLs whose outcome came from the journal
    requests_made: int  # HTTP requests in this run (retries, redirects and robots.txt included)
    unreadable_journal_parts: list[str] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        """Share of rows with an image (`ok` or `duplicate`); 1.0 for an empty shard."""
        n = self.table.num_rows
        return (self.status_counts.get(st.OK, 0) + self.status_counts.get(st.DUPLICATE, 0)) / n if n else 1.0

    def metadata(self) -> dict[str, Any]:
        """Plain values for asset metadata."""
        return {
            "rows": self.table.num_rows,
            "kept_images": self.status_counts.get(st.OK, 0),
            "success_rate": round(self.success_rate, 4),
            "status_counts": dict(sorted(self.status_counts.items())),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "elapsed_s": round(self.elapsed_s, 2), "images_per_s": round(self.images_per_s, 2),
            "urls_fetched": self.urls_fetched, "urls_resumed": self.urls_resumed,
            "requests_made": self.requests_made,
        }


def interleave_by_host(urls: Iterable[str]) -> list[str]:
    """Round-robin over hosts, so that one host's many images do not hold every slot."""
    by_host: dict[str, list[str]] = defaultdict(list)
    for url in urls:
        by_host[urlsplit(url).netloc].append(url)
    return [u for group in itertools.zip_longest(*by_host.values()) for u in group if u is not None]


def cpu_pool_kind(settings: ImageSettings, n_urls: int) -> str:
    """Where a run decodes: "process" (worker processes that fetch and decode their own URLs) or "thread" (this
    process, decoding in threads); `cpu_pool="auto"` decides by the URLs to fetch."""
    if settings.cpu_pool == "auto":
        return "process" if n_urls >= PROCESS_POOL_MIN_URLS else "thread"
    return settings.cpu_pool


def _forkserver() -> mp.context.BaseContext:
    """The context worker processes start from: a clean forkserver (not a fork of this threaded process) that has
    imported the worker's modules once, so each worker starts without importing them again."""
    from .worker import PRELOAD

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", *PRELOAD])  # no effect once the forkserver runs
    return ctx


class _Run:
    """One shard's acquisition run: the URLs processed here or in worker processes, every outcome journaled."""

    def __init__(self, store: UPath, settings: ImageSettings, journal: ImageJournal):
        self.store, self.s, self.journal = store, settings, journal
        self.io = ThreadPoolExecutor(1, thread_name_prefix="images-journal")
        self.pending: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self.flush_lock = asyncio.Lock()
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.total = 0
        self.requests: dict[int, int] = {}  # HTTP requests made, per worker (0: this process)

    @property
    def requests_made(self) -> int:
        return sum(self.requests.values())

    async def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.outcomes[row["image_url"]] = row
        self.pending.extend(rows)
        due = time.monotonic() - self.last_flush >= self.s.journal_flush_s
        if len(self.pending) >= self.s.journal_flush_rows or due:
            await self.flush()

    async def flush(self) -> None:
        async with self.flush_lock:
            rows, self.pending = self.pending, []
            self.last_flush = time.monotonic()
            log.info("images: %d/%d URLs done, %d requests", len(self.outcomes), self.total, self.requests_made)
            try:
                await asyncio.get_running_loop().run_in_executor(self.io, self.journal.append, rows)
            except Exception as e:
                raise ImageStorageError(f"cannot write the image journal under {self.journal.folder}: "
                                        f"{type(e).__name__}: {e}") from e

    async def _in_threads(self, urls: list[str]) -> None:
        from .worker import UrlProcessor  # the fetching and decoding code: this process needs it only here

        with ThreadPoolExecutor(self.s.cpu_workers, thread_name_prefix="images-cpu") as pool:
            proc = UrlProcessor(self.store, self.s, pool)

            async def emit(row: dict[str, Any]) -> None:
                self.requests[0] = proc.fetcher.requests_made
                await self.add([row])

            try:
                await proc.run(urls, emit)
            finally:
                self.requests[0] = proc.fetcher.requests_made
                pool.shutdown(cancel_futures=True)

    async def _in_workers(self, urls: list[str]) -> None:
        from .worker import BACKLOG_PER_SLOT, plan_workers, run_worker

        ctx = _forkserver()
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        plan = plan_workers(urls, self.s, self.s.cpu_workers)
        backlog = max(1, int(plan.settings.concurrency * BACKLOG_PER_SLOT))
        procs, conns = [], []
        held = [0] * plan.workers  # URLs each worker holds: sent, not yet come back as rows
        ended = [False] * plan.workers
        started = [False] * plan.workers

        first = -(-len(plan.queues[0]) // plan.workers) if plan.shared else backlog  # an even start

        def top_up(i: int) -> None:
            """Keep worker i's backlog full from its queue; tell it when there is nothing more."""
            queue = plan.queue(i)
            room = (backlog if started[i] else min(backlog, first)) - held[i]
            # refilled a third of the backlog at a time (fewer, larger messages), or with the queue's last URLs
            if queue and room > 0 and (not started[i] or room >= min(backlog // 3, len(queue))):
                part = [queue.popleft() for _ in range(min(room, len(queue)))]
                held[i] += len(part)
                conns[i].send(("urls", part))
            started[i] = True
            if not queue and not ended[i]:
                ended[i] = True
                conns[i].send(("end", None))

        try:
            for i in range(plan.workers):
                mine, theirs = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=run_worker, args=(self.store, plan.settings, theirs), daemon=True,
                                   name=f"images-worker-{i}")
                proc.start()
                theirs.close()  # the worker holds its end: its exit ends the pipe
                procs.append(proc)
                conns.append(mine)
                loop.add_reader(mine.fileno(), _receive, mine, i, inbox)
            for i in range(plan.workers):
                top_up(i)
            running = set(range(plan.workers))
            while running:
                i, message = await inbox.get()
                if message is None:  # the pipe ended before the worker said it was done
                    await asyncio.to_thread(procs[i].join, 5)
                    raise RuntimeError(f"an image worker process died (exit code {procs[i].exitcode}), e.g. a "
                                       "crashing decoder; its finished URLs are journaled, a rerun resumes")
                kind, payload = message
                if kind == "rows":
                    rows, self.requests[i + 1] = payload
                    held[i] -= len(rows)
                    top_up(i)
                    await self.add(rows)
                elif kind == "done":
                    self.requests[i + 1] = payload
                    running.discard(i)
                    loop.remove_reader(conns[i].fileno())
                else:  # "error": the worker's own, raised here
                    raise payload
        finally:
            for conn in conns:
                if not conn.closed:
                    loop.remove_reader(conn.fileno())
                    conn.close()
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                await asyncio.to_thread(proc.join)

    async def run(self, urls: list[str]) -> None:
        self.total = len(urls)
        urls = interleave_by_host(urls)
        try:
            if cpu_pool_kind(self.s, len(urls)) == "process":
                await self._in_workers(urls)
            else:
                await self._in_threads(urls)
        except BaseExceptionGroup as group:  # surface one cause, not a group: storage first, else the first
            first = next((e for e in group.exceptions if isinstance(e, ImageStorageError)), group.exceptions[0])
            await self._last_flush(first)
            raise first from None
        except BaseException as e:  # cancelled, or a worker's failure: keep what is done
            await self._last_flush(e)
            raise
        else:
            await self._last_flush(None)
        finally:
            self.io.shutdown(wait=True)

    async def _last_flush(self, failure: BaseException | None) -> None:
        """Journal what is done; after a `failure` a flush error only adds to it, so the first cause is raised."""
        try:
            await self.flush()
        except Exception as e:
            if failure is None:
                raise
            log.warning("images: after %s, the journal flush failed too: %s", type(failure).__name__, e)
            failure.add_note(f"Then the last journal flush failed too: {e}")


def _receive(conn: Connection, worker: int, inbox: asyncio.Queue) -> None:
    """A worker's message, read when its pipe is readable (None: the pipe ended)."""
    try:
        message = conn.recv()
    except (EOFError, OSError):
        message = None
        asyncio.get_running_loop().remove_reader(conn.fileno())
    inbox.put_nowait((worker, message))


async def afetch_images(requests: Iterable[ImageRequest], store: UPath, settings: ImageSettings | None = None,
                        seen_url_counts: Mapping[str, int] | None = None, *, shard: str = "default") -> ImageResult:
    """Coroutine form of `fetch_images`."""
    s = settings or ImageSettings()
    started = time.perf_counter()
    reqs = list(requests)
    shard_counts = url_doc_counts((r.doc_id, r.image_url) for r in reqs)
    seen = seen_url_counts or {}
    doc_count = {u: c + seen.get(u, 0) for u, c in shard_counts.items()}
    frequent = {u for u, c in doc_count.items() if c > s.frequent_url_docs} if s.drop_frequent_urls else set()

    journal = ImageJournal(store, shard, s.normalise_fingerprint())
    try:
        done = await asyncio.to_thread(journal.load)
    except Exception as e:
        raise ImageStorageError(f"cannot read the image journal under {journal.folder}: "
                                f"{type(e).__name__}: {e}") from e
    todo = [u for u in dict.fromkeys(r.image_url for r in reqs) if u not in frequent and u not in done]
    run = _Run(store, s, journal)
    await run.run(todo)
    fetched = run.outcomes

    rows = []
    for r in reqs:
        if r.image_url in frequent:
            base = outcome(r.image_url, status=st.FREQUENT_URL, error=(
                f"used by {doc_count[r.image_url]} documents so far (> {s.frequent_url_docs})"))
        else:
            base = fetched.get(r.image_url) or done[r.image_url]
        row = {k: v for k, v in base.items() if k != "fingerprint"}  # a journal row carries it
        row.update(doc_id=r.doc_id, position=r.position, page_url=r.page_url, alt_text=r.alt_text,
                   duplicate_of=None, url_doc_count=doc_count[r.image_url],
                   from_journal=r.image_url in done and r.image_url not in frequent)
        rows.append(row)
    dups = find_duplicates([(row["sha256"], row["phash"]) if row["status"] == st.OK else None for row in rows],
                           s.near_duplicate_distance)
    for row, kept in zip(rows, dups, strict=True):
        if kept is not None:
            how = "same bytes as" if kept == row["sha256"] else "perceptually near"
            row.update(status=st.DUPLICATE, duplicate_of=kept, error=f"{how} kept image {kept}")

    elapsed = time.perf_counter() - started
    normalised = sum(1 for o in fetched.values() if o["status"] == st.OK)
    return ImageResult(
        table=pa.Table.from_pylist(rows, schema=RESULT_SCHEMA),
        url_doc_counts=shard_counts,
        status_counts=dict(Counter(row["status"] for row in rows)),
        bytes_in=sum(o["bytes_in"] or 0 for o in fetched.values()),
        bytes_out=sum(o["bytes_out"] or 0 for o in fetched.values()),
        elapsed_s=elapsed,
        images_per_s=normalised / elapsed if elapsed > 0 else 0.0,
        urls_fetched=len(fetched),
        urls_resumed=sum(1 for u in dict.fromkeys(r.image_url for r in reqs) if u in done and u not in frequent),
        requests_made=run.requests_made,
        unreadable_journal_parts=journal.unreadable_parts,
    )


def fetch_images(requests: Iterable[ImageRequest], store: UPath, settings: ImageSettings | None = None,
                 seen_url_counts: Mapping[str, int] | None = None, *, shard: str = "default") -> ImageResult:
    """Fetch, normalise, store and de-duplicate the images of one shard (see the module docstring)."""
    return asyncio.run(afetch_images(requests, store, settings, seen_url_counts, shard=shard))


__all__ = ["ImageRequest", "ImageResult", "ImageStorageError", "RESULT_SCHEMA", "afetch_images", "fetch_images",
           "image_path", "interleave_by_host"]
