"""Async HTTP(S) fetching: polite, bounded, guarded; plus file:// and s3:// readers.

One `HttpFetcher` per run: one aiohttp session (connection reuse, DNS cache), a global bound on
requests in flight, a per-host gate (concurrency, optional requests/s, Retry-After pause), redirects
followed by hand so that every hop passes the SSRF guard and robots.txt before it is requested.
"""

from __future__ import annotations

import asyncio
import email.utils
import stat
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import fsspec
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from . import statuses as st
from .robots import RobotsCache, x_robots_opt_out
from .safety import AddressGuard, BlockedAddressError, GuardedResolver, Refused, file_url_path
from .settings import ImageSettings

REDIRECT_CODES = {301, 302, 303, 307, 308}
RETRY_CODES = {429, 500, 502, 503, 504}
# Content types that are certainly no image: refused from the headers, before the body is read.
NON_IMAGE_TYPES = {"text/html", "application/xhtml+xml", "application/json", "text/plain", "text/css",
                   "application/javascript", "text/javascript"}
ROBOTS_MAX_BYTES = 512 * 1024  # RFC 9309: parse at least 500 KiB


@dataclass
class Body:
    data: bytes
    http_status: int | None
    final_url: str


@dataclass
class _Redirect:
    location: str


class _Retryable(Exception):
    def __init__(self, status: str, message: str, *, http_status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status, self.http_status, self.retry_after = status, http_status, retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class _HostGate:
    sem: asyncio.Semaphore
    limiter: AsyncLimiter | None
    not_before: float = 0.0  # loop time before which the host gets no request (Retry-After)


class HttpFetcher:
    def __init__(self, settings: ImageSettings):
        self.s = settings
        self.guard = AddressGuard(settings.allowed_hosts, settings.allowed_networks)
        self.robots = RobotsCache(self._fetch_robots, settings.robots_token) if settings.respect_robots_txt else None
        self.requests_made = 0
        self._global = asyncio.Semaphore(settings.concurrency)
        self._gates: dict[str, _HostGate] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpFetcher:
        connector = aiohttp.TCPConnector(
            limit=self.s.concurrency, limit_per_host=0,  # per-host bound is our gate
            ttl_dns_cache=300, resolver=GuardedResolver(self.guard))
        timeout = aiohttp.ClientTimeout(total=self.s.total_timeout_s, sock_connect=self.s.connect_timeout_s,
                                        sock_read=self.s.read_timeout_s)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, trust_env=False,  # no env proxies around the guard
            headers={"User-Agent": self.s.user_agent})
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._session is not None:
            await self._session.close()

    def _gate(self, url: str) -> _HostGate:
        key = urlsplit(url).netloc.lower()
        if key not in self._gates:
            # capacity 1: requests evenly spaced at 1/rps, no burst
            limiter = AsyncLimiter(1, 1 / self.s.per_host_rps) if self.s.per_host_rps else None
            self._gates[key] = _HostGate(asyncio.Semaphore(self.s.per_host_concurrency), limiter)
        return self._gates[key]

    async def fetch(self, url: str, *, max_bytes: int, expect_image: bool = True,
                    check_robots: bool = True) -> Body:
        """GET `url`, following redirects; raises `Refused` with the row status on any failure."""
        seen: set[str] = set()
        for _ in range(self.s.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise Refused(st.BLOCKED_SCHEME, f"redirect to a {parts.scheme}: URL refused: {url}")
            try:
                if not parts.hostname or parts.port == 0:
                    raise ValueError("no host")
            except ValueError as e:  # also an out-of-range port
                raise Refused(st.INVALID_URL, f"{e} in {url!r}") from None
            seen.add(url)
            try:
                await self.guard.check_url(url)
            except UnicodeError as e:  # a host name IDNA cannot encode
                raise Refused(st.INVALID_URL, f"bad host name in {url!r}: {e}") from None
            except OSError as e:  # DNS failure: transient for the journal, so a rerun tries again
                raise Refused(st.CONNECTION_ERROR, f"cannot resolve {parts.hostname}: {e}") from None
            if check_robots and self.robots is not None:
                allowed, reason = await self.robots.allowed(url)
                if not allowed:
                    raise Refused(st.ROBOTS_DISALLOWED, reason)
            result = await self._request(url, max_bytes, expect_image)
            if isinstance(result, Body):
                return result
            if result.location in seen:
                raise Refused(st.REDIRECT_LOOP, f"redirect loop back to {result.location}")
            url = result.location
        raise Refused(st.TOO_MANY_REDIRECTS, f"more than {self.s.max_redirects} redirects")

    async def _request(self, url: str, max_bytes: int, expect_image: bool) -> Body | _Redirect:
        backoff = wait_exponential_jitter(initial=self.s.retry_backoff_s, max=10)

        def wait(state: Any) -> float:
            exc = state.outcome.exception()
            # a Retry-After pause is kept by the host gate, for every request to that host
            return 0.0 if getattr(exc, "retry_after", None) is not None else backoff(state)

        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.s.retries + 1), wait=wait,
                                               retry=retry_if_exception_type(_Retryable), reraise=True):
                with attempt:
                    return await self._attempt(url, max_bytes, expect_image)
        except _Retryable as e:
            raise Refused(e.status, f"{e} (after {self.s.retries + 1} attempts)", http_status=e.http_status) from None
        raise AssertionError("unreachable")

    async def _attempt(self, url: str, max_bytes: int, expect_image: bool) -> Body | _Redirect:
        assert self._session is not None, "use HttpFetcher as an async context manager"
        gate = self._gate(url)
        loop = asyncio.get_running_loop()
        async with gate.sem:
            if (delay := gate.not_before - loop.time()) > 0:
                await asyncio.sleep(delay)
            if gate.limiter is not None:
                await gate.limiter.acquire()
            async with self._global:
                self.requests_made += 1
                try:
                    async with self._session.get(url, allow_redirects=False) as resp:
                        return await self._read(resp, url, max_bytes, expect_image, gate)
                except TimeoutError as e:
                    raise _Retryable(st.TIMEOUT, f"timed out: {type(e).__name__} {e}".strip()) from None
                except aiohttp.ClientPayloadError as e:
                    raise _Retryable(st.TRUNCATED, f"body incomplete: {e}") from None
                except aiohttp.InvalidURL as e:
                    raise Refused(st.INVALID_URL, f"invalid URL: {e}") from None
                except aiohttp.ClientResponseError as e:  # unparsable response: retrying will not help
                    raise Refused(st.BAD_RESPONSE, f"malformed HTTP response: {e.message}") from None
                except aiohttp.ClientConnectorError as e:
                    if isinstance(e.os_error, BlockedAddressError):
                        raise Refused(st.BLOCKED_ADDRESS, str(e.os_error)) from None
                    raise _Retryable(st.CONNECTION_ERROR, f"{type(e).__name__}: {e}") from None
                except aiohttp.ClientError as e:
                    raise _Retryable(st.CONNECTION_ERROR, f"{type(e).__name__}: {e}") from None

    async def _read(self, resp: aiohttp.ClientResponse, url: str, max_bytes: int, expect_image: bool,
                    gate: _HostGate) -> Body | _Redirect:
        code = resp.status
        if code in REDIRECT_CODES:
            location = resp.headers.get("Location")
            if not location:
                raise Refused(st.http_status(code), f"HTTP {code} without Location", http_status=code)
            return _Redirect(urljoin(url, location))
        if code in RETRY_CODES:
            retry_after = parse_retry_after(resp.headers.get("Retry-After")) if code in (429, 503) else None
            if retry_after is not None:
                if retry_after > self.s.max_retry_after_s:
                    raise Refused(st.http_status(code), f"HTTP {code}, Retry-After {retry_after:.0f}s is over "
                                  f"max_retry_after_s={self.s.max_retry_after_s}", http_status=code)
                gate.not_before = max(gate.not_before, asyncio.get_running_loop().time() + retry_after)
            raise _Retryable(st.http_status(code), f"HTTP {code} {resp.reason or ''}".strip(),
                             http_status=code, retry_after=retry_after)
        if not 200 <= code < 300:
            raise Refused(st.http_status(code), f"HTTP {code} {resp.reason or ''}".strip(), http_status=code)
        if expect_image:
            # opt-outs and obvious non-images are decided from the headers, before reading the body
            directive = x_robots_opt_out(resp.headers.getall("X-Robots-Tag", []), self.s.robots_token,
                                         self.s.x_robots_tag_directives)
            if directive:
                resp.close()
                raise Refused(st.OPTED_OUT, f"X-Robots-Tag: {directive}", http_status=code)
            if resp.content_type in NON_IMAGE_TYPES:
                resp.close()
                raise Refused(st.NOT_IMAGE, f"Content-Type {resp.content_type}", http_status=code)
        if resp.content_length is not None and resp.content_length > max_bytes:
            resp.close()
            raise Refused(st.TOO_LARGE, f"Content-Length {resp.content_length} > max_bytes {max_bytes}",
                          http_status=code)
        # chunks as they arrive, joined once: the body is copied a single time
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):  # stops within 64 KiB of max_bytes
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:  # the header may lie or be absent: count what arrives
                resp.close()
                raise Refused(st.TOO_LARGE, f"body over max_bytes {max_bytes} while streaming",
                              http_status=code, bytes_in=size)
        return Body(chunks[0] if len(chunks) == 1 else b"".join(chunks), code, url)

    async def _fetch_robots(self, url: str) -> tuple[int, str]:
        try:
            body = await self.fetch(url, max_bytes=ROBOTS_MAX_BYTES, expect_image=False, check_robots=False)
        except Refused as e:
            if e.http_status is not None:
                return e.http_status, ""
            raise
        return body.http_status or 200, body.data.decode("utf-8", errors="replace")


def read_local_file(url: str, settings: ImageSettings) -> bytes:
    """Bytes of a file:// URL inside an allowed root (blocking; run it in a thread)."""
    path = file_url_path(url, settings.allowed_file_roots)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise Refused(st.BLOCKED_PATH, f"not a regular file: {path}")
        size = info.st_size
        if size > settings.max_bytes:
            raise Refused(st.TOO_LARGE, f"file of {size} bytes > max_bytes {settings.max_bytes}")
        return path.read_bytes()
    except FileNotFoundError:
        raise Refused(st.NOT_FOUND, f"no such file: {path}") from None
    except Refused:
        raise
    except OSError as e:
        raise Refused(st.READ_ERROR, f"{type(e).__name__}: {e}") from None


def read_s3_object(url: str, settings: ImageSettings) -> bytes:
    """Bytes of an s3:// URL through fsspec/s3fs (blocking; run it in a thread)."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **settings.s3_storage_options)
        size = fs.size(path)
        if size is not None and size > settings.max_bytes:
            raise Refused(st.TOO_LARGE, f"object of {size} bytes > max_bytes {settings.max_bytes}")
        return fs.cat_file(path)
    except FileNotFoundError:
        raise Refused(st.NOT_FOUND, f"no such object: {url}") from None
    except Refused:
        raise
    except Exception as e:  # noqa: BLE001 - s3fs raises many kinds; each becomes a row
        raise Refused(st.READ_ERROR, f"{type(e).__name__}: {e}") from None
