"""One URL's way from its source to a stored JPEG and an outcome row: fetch, normalise, write.

`UrlProcessor.run(urls, emit)` does that for many URLs at once (bounded concurrency) and hands each URL's
outcome row (`OUTCOME_SCHEMA` less the fingerprint) to `emit`. It runs either in the caller's process, decoding in
a thread pool (small runs), or in each of `cpu_workers` worker processes (`run_worker`), each fetching *and*
decoding the URLs the parent hands it as it finishes others (`plan_workers`): no image's bytes cross a process
boundary, only URLs go out and the small rows come back to the parent, which journals them (docs/benchmarks.md:
moving the bodies from the fetching process to decoding workers cost ~4 ms of CPU per image, a fifth of the work).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import pickle
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import BrokenExecutor, Executor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from upath import UPath

from viscon_dagster.core.files.atomic import is_local, write_bytes_atomic

from . import statuses as st
from .fetch import HttpFetcher, read_local_file, read_s3_object
from .normalise import Normalised, NormaliseParams, normalise
from .outcomes import ImageStorageError, image_path, outcome
from .safety import Refused
from .settings import ImageSettings

# what a worker would otherwise import on its first image (imagehash.phash imports scipy.fftpack lazily, Pillow its
# format plugins): imported once by the forkserver that the workers start from
PRELOAD = ("viscon_dagster.core.images.worker", "scipy.fftpack", "PIL.JpegImagePlugin", "PIL.PngImagePlugin",
           "PIL.GifImagePlugin", "PIL.WebPImagePlugin", "PIL.BmpImagePlugin", "PIL.TiffImagePlugin",
           "PIL.MpoImagePlugin")
SEND_ROWS, SEND_S = 16, 0.5  # a worker sends its rows to the parent in batches of this many, or this often
# URLs a worker holds (in flight or waiting) per slot of its concurrency: enough to keep it busy, few enough that a
# worker which falls behind (slow hosts, big images) leaves the rest of the shard to the others
BACKLOG_PER_SLOT = 1.5


def normalise_params(s: ImageSettings) -> NormaliseParams:
    return NormaliseParams(s.min_side, s.max_aspect_ratio, s.max_side, s.jpeg_quality, s.max_pixels,
                           s.allowed_formats, s.resample)


class UrlProcessor:
    """Fetches, normalises and stores URLs; `decode`: a pool to decode in, or None to decode in this thread (a
    worker process, whose event loop has nothing better to do with the core meanwhile)."""

    def __init__(self, store: UPath, settings: ImageSettings, decode: Executor | None):
        self.store, self.s, self.decode = store, settings, decode
        self.params = normalise_params(settings)
        self.local_store = is_local(store)  # local writes are cheaper inline than handed to a thread
        self.io = ThreadPoolExecutor(settings.io_workers, thread_name_prefix="images-io")
        self.inflight = asyncio.Semaphore(settings.concurrency * 2)  # bounds bodies held in memory
        self.writes: dict[str, asyncio.Future[None]] = {}  # one write per sha256, shared by its URLs
        self.fetcher = HttpFetcher(settings)

    async def _in(self, pool: Executor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _acquire(self, url: str) -> tuple[bytes, int | None, str]:
        scheme = urlsplit(url).scheme.lower() if url else ""
        if scheme in ("http", "https"):
            body = await self.fetcher.fetch(url, max_bytes=self.s.max_bytes)
            return body.data, body.http_status, body.final_url
        if scheme == "file":
            return await self._in(self.io, read_local_file, url, self.s), None, url
        if scheme in ("s3", "s3a"):
            return await self._in(self.io, read_s3_object, url, self.s), None, url
        if not scheme:
            raise Refused(st.INVALID_URL, f"not an absolute URL: {url!r}")
        raise Refused(st.BLOCKED_SCHEME, f"scheme {scheme}: is not fetched")

    def _write(self, rel: str, data: bytes) -> None:
        path = self.store / rel
        try:
            write_bytes_atomic(path, data)
        except Exception as e:
            raise ImageStorageError(f"cannot write images to the store at {path}: {type(e).__name__}: {e}. "
                                    "The shard stops here; a rerun resumes from the journal.") from e

    async def _store(self, sha: str, jpeg: bytes) -> None:
        rel = image_path(sha)
        if sha not in self.writes:
            if self.local_store:
                fut = asyncio.get_running_loop().create_future()
                self.writes[sha] = fut
                try:
                    self._write(rel, jpeg)
                    fut.set_result(None)
                except BaseException as e:
                    fut.set_exception(e)
                    fut.exception()  # retrieved: raised below
            else:
                self.writes[sha] = asyncio.ensure_future(self._in(self.io, self._write, rel, jpeg))
        await asyncio.shield(self.writes[sha])  # journaled only once the file exists

    async def _normalise(self, url: str, data: bytes) -> Normalised:
        try:
            if self.decode is None:
                return normalise(data, self.params)
            return await self._in(self.decode, normalise, data, self.params)
        except BrokenExecutor as e:  # a worker died (e.g. a crashing decoder): systemic
            raise RuntimeError(f"the image decoding pool broke while decoding {url}: {e}") from e
        except Exception as e:  # noqa: BLE001 - e.g. MemoryError on a huge image: a row, not a failure
            return Normalised(st.UNEXPECTED_ERROR, f"{type(e).__name__}: {e}", hashlib.sha256(data).hexdigest())

    async def row(self, url: str) -> dict[str, Any]:
        """The outcome of one URL (its image stored first when there is one)."""
        async with self.inflight:
            try:
                data, http_status, final_url = await self._acquire(url)
            except Refused as e:
                return outcome(url, status=e.status, error=str(e), http_status=e.http_status, bytes_in=e.bytes_in)
            except Exception as e:  # noqa: BLE001 - one odd URL must not fail the shard; the row says what
                return outcome(url, status=st.UNEXPECTED_ERROR, error=f"{type(e).__name__}: {e}")
            n = await self._normalise(url, data)
            row = outcome(url, status=n.status, error=n.error, http_status=http_status, final_url=final_url,
                          sha256=n.sha256, phash=n.phash, width=n.width, height=n.height,
                          original_width=n.original_width, original_height=n.original_height,
                          original_format=n.original_format, bytes_in=len(data))
            del data  # the body is not held while the next URLs wait for the semaphore
            if n.jpeg is not None:
                await self._store(n.sha256, n.jpeg)
                row.update(path=image_path(n.sha256), bytes_out=len(n.jpeg))
            return row

    async def __aenter__(self) -> UrlProcessor:
        await self.fetcher.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.fetcher.__aexit__(*exc)
        finally:
            self.io.shutdown(wait=True)

    async def emit_row(self, url: str, emit: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        await emit(await self.row(url))

    async def run(self, urls: list[str], emit: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Every URL's row to `emit` as it is done; a storage failure ends the run (as an exception group)."""
        async with self, asyncio.TaskGroup() as tg:
            for url in urls:
                tg.create_task(self.emit_row(url, emit))


@dataclass
class WorkerPlan:
    """How a run's URLs go to its worker processes: each worker's settings, and the queues it takes URLs from as it
    finishes others (`queues[i]` for worker i; one queue shared by all when `shared`)."""

    settings: ImageSettings
    workers: int
    queues: list[deque[str]]
    shared: bool

    def queue(self, worker: int) -> deque[str]:
        return self.queues[0] if self.shared else self.queues[worker]


def plan_workers(urls: list[str], settings: ImageSettings, workers: int) -> WorkerPlan:
    """The bounds for all hosts together are divided among the workers; a host's URLs go to whichever worker is free
    (each with its share of the per-host bound) unless the per-host bound cannot be divided (fewer slots than
    workers, or a requests/s limit): then each host is one worker's."""
    workers = max(1, min(workers, len(urls), settings.concurrency))
    spread = settings.per_host_rps is None and settings.per_host_concurrency >= workers
    each = dataclasses.replace(
        settings, concurrency=settings.concurrency // workers, io_workers=max(1, settings.io_workers // workers),
        per_host_concurrency=settings.per_host_concurrency // workers if spread else settings.per_host_concurrency,
        cpu_workers=1, cpu_pool="thread")
    if spread:
        return WorkerPlan(each, workers, [deque(urls)], shared=True)
    queues: list[deque[str]] = [deque() for _ in range(workers)]
    for url in urls:
        queues[zlib.crc32(urlsplit(url).netloc.lower().encode()) % workers].append(url)
    return WorkerPlan(each, workers, queues, shared=False)


def _sendable(e: BaseException) -> BaseException:
    """`e` itself when it survives pickling (the parent raises it), else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any unpicklable exception
        return RuntimeError(f"{type(e).__name__}: {e}")


def run_worker(store: UPath, settings: ImageSettings, conn: Connection) -> None:
    """A worker process's body. The parent sends ("urls", [...]) as this worker finishes others, then ("end", None);
    each URL is fetched, decoded and stored here and its row sent back in batches as ("rows", (rows,
    requests_made)); last ("done", requests_made), or ("error", exception)."""
    asyncio.run(_work(store, settings, conn))


async def _work(store: UPath, settings: ImageSettings, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    proc = UrlProcessor(store, settings, decode=None)
    batch: list[dict[str, Any]] = []
    last = time.monotonic()
    ended = asyncio.Event()

    def send() -> None:
        nonlocal last
        if batch:
            conn.send(("rows", (batch.copy(), proc.fetcher.requests_made)))
            batch.clear()
        last = time.monotonic()

    async def emit(row: dict[str, Any]) -> None:
        batch.append(row)
        if len(batch) >= SEND_ROWS or time.monotonic() - last >= SEND_S:
            send()

    async def tick() -> None:  # rows of a slow tail are not held back for long
        while True:
            await asyncio.sleep(SEND_S)
            if time.monotonic() - last >= SEND_S:
                send()

    ticker = asyncio.create_task(tick())
    try:
        async with proc, asyncio.TaskGroup() as tg:
            def receive() -> None:
                try:
                    kind, urls = conn.recv()
                except (EOFError, OSError):  # the parent is gone: stop taking work
                    kind, urls = "end", None
                if kind == "urls":
                    for url in urls:
                        tg.create_task(proc.emit_row(url, emit))
                else:
                    loop.remove_reader(conn.fileno())
                    ended.set()

            loop.add_reader(conn.fileno(), receive)
            await ended.wait()
    except BaseExceptionGroup as group:  # storage first, else the first cause
        send()
        first = next((e for e in group.exceptions if isinstance(e, ImageStorageError)), group.exceptions[0])
        conn.send(("error", _sendable(first)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        send()
        conn.send(("error", _sendable(e)))
    else:
        send()
        conn.send(("done", proc.fetcher.requests_made))
    finally:
        ticker.cancel()
        if not conn.closed:
            loop.remove_reader(conn.fileno())
            conn.close()
