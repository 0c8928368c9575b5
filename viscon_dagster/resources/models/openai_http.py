"""OpenAI-compatible chat completions over HTTP: OpenAI itself, `vllm serve`, or any compatible server.

Bounded concurrency, requests/min and tokens/min limits (aiolimiter), retries with exponential backoff
and jitter on 429/5xx/timeouts/connection errors that honour Retry-After (tenacity), images as base64
data URLs, structured output through `response_format` with a fallback to JSON in the prompt, and one
repair retry for answers that are not schema-valid JSON. A call stops asking (and stops retrying) as soon
as the partition cannot succeed any more (`core/models/failures.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from aiolimiter import AsyncLimiter
from pydantic import Field, PrivateAttr
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_when_event_set

from viscon_dagster.core.models.failures import status_kind
from viscon_dagster.core.models.parsing import (
    detect_refusal,
    parse_structured,
    repair_messages,
    with_schema_instruction,
)
from viscon_dagster.core.models.request import Message, Request, Response, Usage, unreadable_image
from viscon_dagster.resources.models.base import ModelBackend

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


def causes(e: BaseException | None):
    """`e` and what it wraps, outermost first."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def error_kind(e: BaseException) -> str:
    if isinstance(e, openai.APIStatusError):
        return status_kind(e.status_code, e.code, str(e))
    if isinstance(e, openai.APIConnectionError):
        # the aiohttp transport reports every transport failure as APITimeoutError: what it wraps says which
        chain = list(causes(e))[1:]
        if any(isinstance(c, ConnectionRefusedError) for c in chain):
            return "connection_refused"
        if any(isinstance(c, TimeoutError) for c in chain):  # asyncio's, aiohttp's, httpcore's socket timeouts
            return "timeout"
        return "timeout" if not chain and isinstance(e, openai.APITimeoutError) else "connection"
    return "bad_response"


def describe(e: BaseException) -> str:
    """The error and, when it wraps one, the root cause (e.g. the refused connection behind a 'timeout')."""
    # the socket's own error when there is one, else the end of the explicit `raise … from` chain
    # (implicit contexts can trail it: errors handled on the way, unrelated to this one)
    sockets = [c for c in causes(e) if isinstance(c, OSError) and type(c).__module__ == "builtins"]
    if sockets:
        root = sockets[-1]
    else:
        root = e
        while root.__cause__ is not None and root.__cause__ is not e:
            root = root.__cause__
    text = f"{type(e).__name__}: {e}"
    return text if root is e else f"{text} (cause: {type(root).__name__}: {root})"


def retryable(e: BaseException) -> bool:
    if isinstance(e, openai.RateLimitError) and e.code == "insufficient_quota":
        return False  # a 429 that waiting does not fix
    return isinstance(e, (openai.APITimeoutError, openai.APIConnectionError)) or (
        isinstance(e, openai.APIStatusError) and e.status_code in RETRYABLE_STATUS)


def retry_after_s(e: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (Retry-After-Ms, Retry-After as seconds or HTTP date)."""
    headers = getattr(getattr(e, "response", None), "headers", None)
    if not headers:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return float(ra)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(ra) if ra else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class _Wait:
    """Retry-After when the server sends one (plus a little jitter), else full-jitter exponential backoff."""

    def __init__(self, initial: float, maximum: float, max_retry_after: float):
        self.initial, self.maximum = initial, maximum
        self.max_retry_after = max_retry_after

    def delay(self, exc: BaseException | None, attempt: int) -> float:
        ra = retry_after_s(exc)
        if ra is not None:
            return min(ra, self.max_retry_after) + random.uniform(0, 0.1 * ra + 0.01)
        return random.uniform(0, min(self.maximum, self.initial * 2**attempt))

    def __call__(self, state) -> float:
        # tenacity counts from the second attempt (the first ran outside it)
        return self.delay(state.outcome.exception(), state.attempt_number + 1)


@dataclass
class _Run:
    """Per-call state: the client and limiters live on one event loop, so they are made per call."""

    client: openai.AsyncOpenAI
    rpm: AsyncLimiter | None
    tpm: AsyncLimiter | None
    prompt_mode: bool  # schema in the prompt instead of response_format (sticky once the server refuses it)
    stopping: asyncio.Event  # the partition cannot succeed: no new requests, no more retries

    async def pause(self, seconds: float) -> None:
        """A backoff wait that ends early when the call is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


class _Answer:
    def __init__(self, text, refusal, finish_reason, usage):
        self.text, self.refusal, self.finish_reason, self.usage = text, refusal, finish_reason, usage


class OpenAIHTTPBackend(ModelBackend):
    """Chat completions against an OpenAI-compatible server. Key from configuration (`dg.EnvVar`)."""

    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1; None: api.openai.com")
    api_key: str | None = Field(None, description="set with dg.EnvVar('OPENAI_API_KEY'); never logged")
    max_concurrency: int = Field(64, description="requests in flight")
    requests_per_minute: float | None = Field(None, description="RPM limit (None: unlimited)")
    tokens_per_minute: float | None = Field(None, description="TPM limit, on estimated tokens (None: unlimited)")
    max_attempts: int = Field(6, description="HTTP attempts per call, first included")
    backoff_initial_s: float = Field(1.0, description="exponential backoff multiplier")
    backoff_max_s: float = Field(60.0, description="longest backoff without Retry-After")
    max_retry_after_s: float = Field(300.0, description="longest Retry-After honoured")
    timeout_s: float = Field(120.0, description="per HTTP attempt")
    structured_output: str = Field(
        "auto", description="json_schema | prompt | auto (response_format, else the prompt if the server rejects it)")
    repair_retry: bool = Field(True, description="one more call when the answer is not schema-valid JSON")
    extra_body: dict[str, Any] = Field(default_factory=dict, description="extra request fields, e.g. vLLM's")
    image_detail: str | None = Field(None, description="OpenAI image detail: auto, low or high")
    http_transport: str = Field(
        "aiohttp", description="aiohttp (openai's aiohttp transport) or httpx; httpx's pool costs O(connections) "
                               "CPU per request, which caps throughput at high concurrency")

    _prompt_mode_learned: bool = PrivateAttr(False)

    def _secrets(self) -> list[str]:
        return [k for k in (self.api_key, os.environ.get("OPENAI_API_KEY")) if k]

    def _estimate_tokens(self, req: Request) -> int:
        chars = sum(len(m.text()) for m in req.messages)
        return chars // 4 + 800 * len(req.images()) + req.params.max_tokens

    async def _wire_messages(self, messages: list[Message]) -> list[dict[str, Any]]:
        out = []
        for m in messages:
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
                continue
            parts = []
            for p in m.content:
                if p.type == "text":
                    parts.append({"type": "text", "text": p.text or ""})
                else:
                    url = {"url": await asyncio.to_thread(p.image.data_url)}
                    if self.image_detail:
                        url["detail"] = self.image_detail
                    parts.append({"type": "image_url", "image_url": url})
            out.append({"role": m.role, "content": parts})
        return out

    async def _call(self, run: _Run, req: Request, wire: list[dict], use_rf: bool, calls: list[int]) -> _Answer:
        p = req.params
        kw: dict[str, Any] = dict(model=self.model, messages=wire, max_tokens=p.max_tokens,
                                  temperature=p.temperature, top_p=p.top_p)
        if p.seed is not None:
            kw["seed"] = p.seed
        if p.stop:
            kw["stop"] = p.stop
        if use_rf:
            kw["response_format"] = {"type": "json_schema", "json_schema": {
                "name": req.schema_name, "schema": req.json_schema, "strict": True}}
        kw.update(self.extra_body)
        est = min(self._estimate_tokens(req), int(self.tokens_per_minute)) if run.tpm else 0
        failed: list[BaseException] = []

        async def send() -> dict:
            if failed and run.stopping.is_set():
                raise failed[-1]  # no retry once the partition cannot succeed: report what the last attempt got
            if run.rpm:
                await run.rpm.acquire()
            if run.tpm:
                await run.tpm.acquire(est)
            calls[0] += 1
            # the client's POST with the raw response: `chat.completions.create` re-walks the body against
            # its TypedDicts and builds models (~1 ms CPU a request), which caps throughput at high concurrency
            try:
                raw = await run.client.post("/chat/completions", body=kw, cast_to=httpx2.Response)
            except Exception as e:
                failed.append(e)
                raise
            return raw.json()

        try:
            data = await send()  # most calls succeed first time: no retry machinery on that path
        except Exception as first:
            if not retryable(first) or self.max_attempts < 2:
                raise
            wait = _Wait(self.backoff_initial_s, self.backoff_max_s, self.max_retry_after_s)
            await run.pause(wait.delay(first, 1))
            stop = stop_after_attempt(self.max_attempts - 1) | stop_when_event_set(run.stopping)
            async for attempt in AsyncRetrying(stop=stop,
                                               retry=retry_if_exception(retryable), wait=wait, reraise=True,
                                               sleep=run.pause):
                with attempt:
                    data = await send()
        choices = data.get("choices") or []
        if not choices:
            raise ValueError("response without choices")
        msg = choices[0].get("message") or {}
        u = data.get("usage") or {}
        return _Answer(msg.get("content"), msg.get("refusal"), choices[0].get("finish_reason"),
                       Usage(prompt_tokens=u.get("prompt_tokens") or 0,
                             completion_tokens=u.get("completion_tokens") or 0))

    async def _answer(self, run: _Run, req: Request, fp: str) -> Response:
        calls = [0]
        usage = Usage()
        t0 = time.perf_counter()

        def done(**kw) -> Response:
            return self._response(fp, usage=usage, attempts=calls[0],
                                  latency_s=time.perf_counter() - t0, **kw)

        schema = req.json_schema
        try:
            msgs = req.messages
            use_rf = schema is not None and not run.prompt_mode
            try:
                wire = await self._wire_messages(msgs if not schema or use_rf else
                                                 with_schema_instruction(msgs, schema))
            except OSError as e:  # the image is not in storage (any more): this row fails, not the run
                return done(status="error", error_kind="image_unreadable", error=unreadable_image(e, req.images()))
            try:
                ans = await self._call(run, req, wire, use_rf, calls)
            except openai.BadRequestError:
                if not (use_rf and self.structured_output == "auto"):
                    raise
                # maybe the server does not take response_format: try the schema in the prompt, and if that
                # works, keep doing so (a 400 for another reason fails again and changes nothing)
                use_rf = False
                wire = await self._wire_messages(with_schema_instruction(msgs, schema))
                ans = await self._call(run, req, wire, use_rf, calls)
                run.prompt_mode = self._prompt_mode_learned = True
            usage += ans.usage
            if reason := detect_refusal(ans.text, ans.refusal, ans.finish_reason):
                return done(status="refused", text=ans.text, error_kind="refusal", error=reason,
                            finish_reason=ans.finish_reason)
            if schema is None:
                return done(status="ok", text=ans.text, finish_reason=ans.finish_reason)
            parsed, why = parse_structured(ans.text, schema)
            if why and self.repair_retry:
                fixed = repair_messages(msgs if use_rf else with_schema_instruction(msgs, schema), ans.text, why,
                                        schema)
                try:
                    ans2 = await self._call(run, req, await self._wire_messages(fixed), use_rf, calls)
                except openai.OpenAIError as e:  # the first answer was paid for: keep it, as unparsable
                    return done(status="unparsable", text=ans.text, error_kind="unparsable",
                                finish_reason=ans.finish_reason,
                                error=f"{why}; repair call failed: {type(e).__name__}"[:500])
                usage += ans2.usage
                if reason := detect_refusal(ans2.text, ans2.refusal, ans2.finish_reason):
                    return done(status="refused", text=ans2.text, error_kind="refusal", error=reason,
                                finish_reason=ans2.finish_reason)
                parsed, why2 = parse_structured(ans2.text, schema)
                if why2 is None:
                    return done(status="ok", text=ans2.text, parsed=parsed, finish_reason=ans2.finish_reason)
                ans, why = ans2, why2
            if why:
                return done(status="unparsable", text=ans.text, error_kind="unparsable", error=why,
                            finish_reason=ans.finish_reason)
            return done(status="ok", text=ans.text, parsed=parsed, finish_reason=ans.finish_reason)
        except (openai.OpenAIError, ValueError, OSError) as e:
            return done(status="error", error_kind=error_kind(e), error=describe(e)[:500])

    async def _generate(self, requests, fingerprints, emit, journal) -> None:
        n = self.max_concurrency

        limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
        http = (openai.DefaultAioHttpClient if self.http_transport == "aiohttp"
                else openai.DefaultAsyncHttpxClient)(limits=limits, timeout=self.timeout_s)
        client = openai.AsyncOpenAI(
            base_url=self.base_url, max_retries=0, timeout=self.timeout_s, http_client=http,
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY")
        run = _Run(client=client,
                   rpm=AsyncLimiter(self.requests_per_minute, 60) if self.requests_per_minute else None,
                   tpm=AsyncLimiter(self.tokens_per_minute, 60) if self.tokens_per_minute else None,
                   prompt_mode=self.structured_output == "prompt" or self._prompt_mode_learned,
                   stopping=asyncio.Event())

        todo = iter(range(len(requests)))

        async def worker() -> None:
            # `max_concurrency` workers pulling from one iterator: a 100k-request partition costs 64 tasks,
            # not 100k, and the first requests leave before the rest are even looked at
            for j in todo:
                if run.stopping.is_set():
                    return
                if not await emit(j, await self._answer(run, requests[j], fingerprints[j])):
                    run.stopping.set()

        try:
            await asyncio.gather(*(worker() for _ in range(min(n, len(requests)))))
        finally:
            await client.close()

