"""Which failed calls are the service's fault rather than an answer, and when they fail a partition.

A response with status `error` is not an answer. When its cause is the request itself (an image missing
from storage, a request the model cannot take) it is a row like any other. Every other error is
systemic: the server could not be reached or would not answer (connection refused or dropped, timeouts,
5xx or 429 after the retries, quota, a wrong key, an unknown model). Such errors are not data: the
partition fails once everything answered is journaled (unless `max_failure_fraction` tolerates them),
so that a rerun or a backfill relaunch asks again for exactly those. Fatal kinds fail every other
request the same way, so a call stops at the first one.

A rejected request (`bad_request`, `context_too_long`) is a row, unless the rejections are systemic: a
misconfiguration (a model that does not take images, an unsupported `response_format`, a bad parameter,
a context length shorter than the prompts) makes every request invalid, and a partition of error rows
would pass. So when the first N requests a call asks (`systemic_after_n_bad_requests`), or every
request of a partition smaller than that (2 at least, none answered from the journal), are rejected with
the same message before anything is answered, the call stops and the partition fails with that
message. "The same message" compares messages with every token that holds a digit masked (token
counts, lengths, request ids differ from page to page; the cause does not). One answer, even a
refusal, shows the configuration works: later rejections are rows whatever their number.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from viscon_dagster.core.models.request import Response

# error kinds that are about the request, not the service: recorded rows
ROW_KINDS = frozenset({"image_unreadable", "bad_request", "context_too_long"})
# rejections of the request by the model (server or local): systemic when every request gets the same one
REJECTION_KINDS = frozenset({"bad_request", "context_too_long"})
# the service refuses this configuration: asking again cannot help, and nothing else is asked
FATAL_KINDS = frozenset({"auth", "permission_denied", "model_not_found", "quota"})

WHAT = {
    "connection_refused": "connection refused (is the server running, is base_url right?)",
    "connection": "the connection failed or was dropped before an answer",
    "timeout": "no answer within the timeout",
    "server_error": "the server answered 5xx",
    "rate_limited": "rate limited (429) after the retries",
    "quota": "the account's quota is exhausted (429 insufficient_quota)",
    "auth": "authentication failed (401: the API key is missing or wrong)",
    "permission_denied": "permission denied (403: the key may not use this model or endpoint)",
    "model_not_found": "model not found (404: unknown model name, or base_url without the API path)",
    "bad_response": "the server's reply is not a chat completion",
    "batch_pending": "the batch is still running (a rerun collects it)",
    "batch_failed": "the batch item failed or expired on every resubmission",
    "not_asked": "not asked: the call stopped once the partition could not succeed",
    "bad_request": "the request was rejected as invalid (400)",
    "context_too_long": "the prompt does not fit the model's context length",
}

_KEYISH = re.compile(r"\b(sk-|sess-|Bearer\s+)[A-Za-z0-9_*\-]{4,}")
_WITH_DIGIT = re.compile(r"[A-Za-z0-9_\-]*[0-9][A-Za-z0-9_\-]*")
# how servers say a prompt is too long: OpenAI's error code, vLLM's messages (server and engine), llama.cpp's
_CONTEXT_LENGTH = re.compile(r"context_length_exceeded|maximum context length|longer than the maximum model length"
                             r"|exceeds? the (?:available )?context (?:size|length)", re.I)


def is_systemic(response: Response) -> bool:
    return response.status == "error" and response.error_kind not in ROW_KINDS


def is_fatal(response: Response) -> bool:
    return response.status == "error" and response.error_kind in FATAL_KINDS


def is_context_length(text: str | int | None) -> bool:
    """Whether a rejection's code or message says the prompt does not fit the model's context (vLLM's
    error code is the status, an int)."""
    return text is not None and _CONTEXT_LENGTH.search(str(text)) is not None


def normalised_message(text: str | None) -> str:
    """A rejection's message as compared for the systemic rule: every token that holds a digit masked,
    whitespace collapsed, case folded."""
    return " ".join(_WITH_DIGIT.sub("#", text or "").split()).casefold()


def status_kind(status: int | None, code: str | int | None = None, message: str | None = None) -> str:
    """The error kind of an HTTP error status, the API's error code and message (chat endpoint and batch
    items; None: a batch item or batch that failed without an HTTP status)."""
    if status in (400, 413, 422) and (is_context_length(code) or is_context_length(message)):
        return "context_too_long"
    if code == "insufficient_quota":
        return "quota"
    if code == "model_not_found" or status == 404:
        return "model_not_found"
    if code == "invalid_api_key" or status == 401:
        return "auth"
    if status is None:
        return "batch_failed"
    if status == 403:
        return "permission_denied"
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    if status in (400, 413, 422):
        return "bad_request"
    return f"http_{status}"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without the given secrets or anything shaped like an API key (servers echo keys, masked or not)."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return _KEYISH.sub(lambda m: m.group(1) + "***", text)


class ModelServiceError(RuntimeError):
    """The model service failed a partition: what failed (kinds and counts), and what is safe in the journal."""

    def __init__(self, message: str, kinds: dict[str, int], journaled: int, total: int):
        super().__init__(message)
        self.kinds, self.journaled, self.total = kinds, journaled, total


def rejection_limit(n: int, asked: int, from_journal: int) -> int:
    """How many rejections with one message, before any answer, make them systemic: `n` (0: never), or
    every request asked when the partition asks fewer than `n`, at least 2, and none came from the journal
    (a partition with journaled answers worked before: its last few rejections are rows)."""
    if n <= 0:
        return 0
    if asked >= n:
        return n
    return asked if asked >= 2 and from_journal == 0 else 0


class FailureTally:
    """Systemic failures of one call, by request position, against what `max_fraction` tolerates.

    `stop` turns true at the first fatal failure, once more positions failed than tolerated, or once
    `rejection_limit` rejections in a row had the same message with nothing answered yet: the partition
    cannot succeed any more, so asking the rest would only spend time and retries. `total`: the call's
    positions; `asked`: the distinct requests it asks (default `total`); `from_journal`: positions
    answered from the journal."""

    def __init__(self, total: int, max_fraction: float = 0.0, systemic_after_n_bad_requests: int = 0,
                 asked: int | None = None, from_journal: int = 0):
        self.allowed = math.floor(max_fraction * total + 1e-9)
        self.failed = 0
        self.fatal = False
        self.first: Response | None = None
        self.bad_request_setting = systemic_after_n_bad_requests
        self.rejection_limit = rejection_limit(systemic_after_n_bad_requests,
                                               total if asked is None else asked, from_journal)
        self.answered = False  # an answer arrived: the configuration works, rejections are rows
        self.run: tuple[str | None, str] | None = None  # (kind, normalised message) of the current run
        self.run_length = 0
        self.run_first: Response | None = None
        self.rejected = False  # the run reached the limit: systemic

    def _rejection(self, response: Response) -> None:
        if self.answered or not self.rejection_limit:
            return
        key = (response.error_kind, normalised_message(response.error))
        if key != self.run:
            self.run, self.run_length, self.run_first = key, 0, response
        self.run_length += 1
        self.rejected = self.rejected or self.run_length >= self.rejection_limit

    def add(self, response: Response, positions: int = 1) -> None:
        if response.status != "error":
            self.answered = True
            return
        if response.error_kind in REJECTION_KINDS:
            self._rejection(response)
            return
        if not is_systemic(response):
            return
        self.failed += positions
        self.fatal = self.fatal or is_fatal(response)
        if self.first is None or (is_fatal(response) and not is_fatal(self.first)):
            self.first = response

    @property
    def stop(self) -> bool:
        return self.fatal or self.rejected or self.failed > self.allowed

    def error(self, who: str, out: Sequence[Response | None], crash: BaseException | None = None,
              secrets: Iterable[str | None] = ()) -> ModelServiceError | None:
        """The exception that fails the partition, or None when it may pass (`out`: the call's responses by
        position, None for requests never asked)."""
        if crash is None and not self.stop:
            return None
        kinds = Counter("not_asked" if r is None else r.error_kind or "unknown" for r in out
                        if r is None or is_systemic(r) or (self.rejected and r.error_kind in REJECTION_KINDS))
        journaled = sum(r is not None and r.journaled() for r in out)
        missing = len(out) - journaled
        parts = []
        if crash is not None:
            parts.append(f"{who} failed: {type(crash).__name__}: {crash}")
        if self.rejected and self.run_first is not None:
            n, which = self.run_length, ("the first" if self.rejection_limit == self.bad_request_setting
                                         else "all")
            parts.append(f"{who}: {which} {n} requests asked were rejected ({self.run_first.error_kind}) with the "
                         f"same message, so every request would be: a configuration fault (a model that does not "
                         f"take images, an unsupported response_format or parameter, a context length shorter "
                         f"than the prompts), not {n} bad rows, and nothing more was asked. The message: "
                         f"{(self.run_first.error or 'none').rstrip('.')}. Fix the configuration and rerun; if "
                         f"the rejections are genuine rows, raise systemic_after_n_bad_requests "
                         f"(now {self.bad_request_setting})")
        if kinds:
            causes = sorted(kinds.items(), key=lambda kn: (kn[0] == "not_asked", -kn[1]))  # causes first
            why = "; ".join(f"{k} ×{n}: {WHAT.get(k, k)}" for k, n in causes)
            parts.append(f"{who}: {sum(kinds.values())} of {len(out)} requests got no answer — {why}")
            if self.fatal:
                parts.append("Fatal: every other request would fail the same way, so nothing more was asked")
            elif crash is None and not self.rejected:
                parts.append(f"max_failure_fraction tolerates {self.allowed}")
        if crash is None and self.first is not None and self.first.error:
            parts.append(f"First error: {self.first.error.rstrip('.')}")
        parts.append(f"{journaled} of {len(out)} answers are journaled; a rerun pays only for the {missing} "
                     "without one" if missing else f"All {journaled} answers are journaled")
        message = redact(". ".join(parts) + ".", secrets)
        return ModelServiceError(message[:4000], dict(kinds), journaled, len(out))
