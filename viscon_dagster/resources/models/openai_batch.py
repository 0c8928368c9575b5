"""The OpenAI Batch API: half price, answers within the completion window.

Requests become JSONL files within the API's limits (requests and bytes per file), are uploaded,
submitted as batches, polled and collected. Each batch id is journaled the moment it is created, so a
later run (after a crash, or after `max_wait_s` ran out) collects those batches instead of paying
again. The moment between creating a batch and journaling its id is covered too: an intent (the
uploaded file's id and its fingerprints) is journaled before `batches.create`, and a later run that
finds an intent looks the batch up by its input file (`batches.list`) and adopts it; if there is none,
the batch was never created and the items are submitted again. Only the items that failed or expired
are resubmitted, at most `max_resubmits` times; what is still unanswered then becomes an error row (not
journaled: the next run tries again). An item the API rejects (400: invalid, context too long) is not
resubmitted: it is a row at once, and the base class's rule may find the rejections systemic and stop
(`core/models/failures.py`). With `repair_retry`, an answer that is not schema-valid JSON goes back once,
with the model's answer and the reason, in the next round's batch (that round counts toward
`max_resubmits`); if the repair does not come back, the first answer is kept as `unparsable`.
Items that fail inside a batch keep their cause (the item's HTTP status and error code, or the batch's
own error) as the same error kinds as the HTTP backend; a fatal one (a wrong key, an unknown model, no
quota) ends the call without resubmitting anything, leaving batches still running journaled for a rerun.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import openai
from pydantic import Field

from viscon_dagster.core.models.failures import FATAL_KINDS, REJECTION_KINDS, status_kind
from viscon_dagster.core.models.parsing import detect_refusal, parse_structured, repair_messages
from viscon_dagster.core.models.request import Request, Response, Usage
from viscon_dagster.resources.models.openai_http import OpenAIHTTPBackend, describe, error_kind

TERMINAL = {"completed", "failed", "expired", "cancelled"}
STATE_PREFIX = "batch-"
INTENT_PREFIX = "submitting-"
CLOCK_SKEW_S = 3600  # how much older than an intent a batch made from it may look (clocks differ)


def item_failure(rec: dict) -> tuple[str, str]:
    """(error kind, message) of a batch output or error file line that holds no answer."""
    resp = rec.get("response") or {}
    status = resp.get("status_code")
    err = (resp.get("body") or {}).get("error") or rec.get("error") or {}
    code = str(err["code"]) if err.get("code") is not None else None
    where, message = f"HTTP {status}" if status else "batch item", err.get("message")
    return status_kind(status, code, message), f"{where}: {message or code or 'no reason given'}"[:500]


def batch_failure(batch) -> tuple[str, str] | None:
    """(error kind, message) of a batch that failed as a whole (e.g. its input did not validate), if it did."""
    data = getattr(getattr(batch, "errors", None), "data", None) or []
    if batch.status != "failed" or not data:
        return None
    e = data[0]
    return status_kind(None, e.code), f"batch {batch.status}: {e.message or e.code}"[:500]


class OpenAIBatchBackend(OpenAIHTTPBackend):
    """Same settings as the HTTP backend (base_url, api_key, model, structured output), plus batching."""

    completion_window: str = Field("24h", description="the Batch API's completion window")
    max_requests_per_batch: int = Field(50_000, description="API limit: requests per batch file")
    max_batch_bytes: int = Field(190 * 1024 * 1024, description="API limit is 200 MB per file; keep a margin")
    poll_interval_s: float = Field(30.0, description="seconds between status polls")
    max_wait_s: float | None = Field(None, description="stop waiting after this long; a rerun collects")
    max_resubmits: int = Field(2, description="rounds of resubmitting failed or expired items")

    def _line(self, fp: str, req: Request, wire: list[dict]) -> dict:
        p = req.params
        body: dict[str, Any] = {"model": self.model, "messages": wire, "max_tokens": p.max_tokens,
                                "temperature": p.temperature, "top_p": p.top_p}
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = p.stop
        if req.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": req.schema_name, "schema": req.json_schema, "strict": True}}
        return {"custom_id": fp, "method": "POST", "url": "/v1/chat/completions", "body": {**body, **self.extra_body}}

    def _chunks(self, lines: list[bytes]) -> list[list[bytes]]:
        chunks, cur, size = [], [], 0
        for line in lines:
            if cur and (len(cur) >= self.max_requests_per_batch or size + len(line) > self.max_batch_bytes):
                chunks.append(cur)
                cur, size = [], 0
            cur.append(line)
            size += len(line)
        return chunks + ([cur] if cur else [])

    def _interpret(self, fp: str, req: Request | None, body: dict, latency: float) -> Response:
        ch = (body.get("choices") or [{}])[0]
        msg = ch.get("message") or {}
        u = body.get("usage") or {}
        usage = Usage(prompt_tokens=u.get("prompt_tokens", 0), completion_tokens=u.get("completion_tokens", 0))
        text, finish = msg.get("content"), ch.get("finish_reason")
        kw = dict(text=text, usage=usage, finish_reason=finish, latency_s=latency, batch=True)
        if reason := detect_refusal(text, msg.get("refusal"), finish):
            return self._response(fp, status="refused", error_kind="refusal", error=reason, **kw)
        schema = req.json_schema if req is not None else None
        if schema is None:
            return self._response(fp, status="ok", **kw)
        parsed, why = parse_structured(text, schema)
        if why:
            return self._response(fp, status="unparsable", error_kind="unparsable", error=why, **kw)
        return self._response(fp, status="ok", parsed=parsed, **kw)

    async def _submit(self, client, journal, pending: dict[str, Request], round_: int) -> dict[str, dict]:
        """Submit `pending` in as many batches as the limits need; {batch id: its state}."""
        lines = []
        for fp, req in pending.items():
            wire = await self._wire_messages(req.messages)
            lines.append(json.dumps(self._line(fp, req, wire), separators=(",", ":")).encode() + b"\n")
        ids = {}
        for chunk in self._chunks(lines):
            f = await client.files.create(file=("requests.jsonl", b"".join(chunk)), purpose="batch")
            fps = [json.loads(line)["custom_id"] for line in chunk]
            intent = {"input_file_id": f.id, "fingerprints": fps, "round": round_, "model": self.model,
                      "submitted_at": time.time()}
            if journal is not None:  # a crash from here until the batch id is journaled is recoverable
                await asyncio.to_thread(journal.put_state, f"{INTENT_PREFIX}{f.id}", intent)
            batch = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                completion_window=self.completion_window)
            ids[batch.id] = await self._record(journal, batch.id, intent)
        return ids

    async def _record(self, journal, batch_id: str, intent: dict) -> dict:
        """Journal a created batch (a rerun collects it) and drop the intent it came from."""
        state = {"batch_id": batch_id, **intent}
        if journal is not None:
            await asyncio.to_thread(journal.put_state, f"{STATE_PREFIX}{batch_id}", state)
            await asyncio.to_thread(journal.delete_state, f"{INTENT_PREFIX}{intent['input_file_id']}")
        return state

    async def _adopt_intents(self, client, journal, intents: dict[str, dict]) -> dict[str, dict]:
        """Batches a killed run created but did not journal, found by their input file (`intents`: input
        file id -> intent); {batch id: state}. Intents with no batch are dropped: never submitted."""
        if not intents:
            return {}
        oldest = min(s["submitted_at"] for s in intents.values()) - CLOCK_SKEW_S
        adopted = {}
        async for batch in client.batches.list(limit=100):  # newest first
            if batch.input_file_id in intents:
                adopted[batch.id] = await self._record(journal, batch.id, intents.pop(batch.input_file_id))
            if not intents or (batch.created_at or 0) < oldest:
                break
        for file_id in intents:
            await asyncio.to_thread(journal.delete_state, f"{INTENT_PREFIX}{file_id}")
        return adopted

    async def _collect(self, client, batch) -> tuple[dict[str, dict], dict[str, tuple[str, str]]]:
        """(custom_id -> response body for answered items, custom_id -> (kind, message) for failed ones)."""
        answered, failed = {}, {}
        for fid, is_err in ((batch.output_file_id, False), (batch.error_file_id, True)):
            if not fid:
                continue
            content = await client.files.content(fid)
            for line in content.text.splitlines():
                if not line.strip():
                    continue
                rec = json.loads(line)
                resp = rec.get("response") or {}
                if not is_err and resp.get("status_code") == 200:
                    answered[rec["custom_id"]] = resp.get("body") or {}
                else:
                    failed[rec["custom_id"]] = item_failure(rec)
        return answered, failed

    def _rejected(self, fp: str, reason: tuple[str, str], first_answers: dict[str, Response]) -> Response:
        """The row of an item the API rejected; for a rejected repair, the paid first answer instead."""
        if fp in first_answers:
            first = first_answers.pop(fp)
            return first.model_copy(update={"error": f"{first.error}; its repair was rejected: {reason[1]}"[:500]})
        return self._response(fp, status="error", batch=True, error_kind=reason[0], error=reason[1])

    async def _generate(self, requests, fingerprints, emit, journal) -> None:
        by_fp = {fp: (j, req) for j, (fp, req) in enumerate(zip(fingerprints, requests))}
        # few calls, each worth retrying: the client's own retries (backoff, Retry-After) suffice here
        client = openai.AsyncOpenAI(base_url=self.base_url, max_retries=self.max_attempts - 1, timeout=self.timeout_s,
                                    api_key=self.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY")
        done: set[str] = set()
        why: dict[str, tuple[str, str]] = {}  # the last reason an item came back unanswered
        fatal = False
        stopping = False  # the call's rule says stop (e.g. every item rejected with one message)
        first_answers: dict[str, Response] = {}  # unparsable answers whose repair is under way
        repairs: dict[str, Request] = {}  # the repair request of each

        async def deliver(fp: str, resp: Response) -> bool:
            """Emit (or keep) an answer; False once the call is stopping."""
            done.add(fp)
            if fp in by_fp:
                return await emit(by_fp[fp][0], resp)
            if journal is not None:  # a journaled batch answered a request this call did not ask: keep it
                await asyncio.to_thread(journal.put, resp)
            return True

        try:
            # batches a previous run submitted: collect, never resubmit
            states = await asyncio.to_thread(journal.states) if journal is not None else {}
            mine = {name: s for name, s in states.items() if s.get("model") == self.model}
            active = {s["batch_id"]: s for name, s in mine.items() if name.startswith(STATE_PREFIX)}
            active.update(await self._adopt_intents(client, journal, {
                s["input_file_id"]: s for name, s in mine.items() if name.startswith(INTENT_PREFIX)}))
            in_batches = {fp for s in active.values() for fp in s["fingerprints"]}
            pending = {fp: req for fp, (_, req) in by_fp.items() if fp not in in_batches}
            round_ = 0
            if pending:
                active.update(await self._submit(client, journal, pending, round_))
            deadline = time.monotonic() + self.max_wait_s if self.max_wait_s is not None else None
            retry: dict[str, Request] = {}
            while active and not (fatal or stopping):
                for bid in list(active):
                    batch = await client.batches.retrieve(bid)
                    if batch.status not in TERMINAL:
                        continue
                    answered, failed = await self._collect(client, batch)
                    whole = batch_failure(batch)
                    latency = max(0.0, (batch.completed_at or batch.expired_at or time.time()) - batch.created_at) \
                        if getattr(batch, "created_at", None) else 0.0
                    for fp, body in answered.items():
                        resp = self._interpret(fp, by_fp.get(fp, (0, None))[1], body, latency)
                        if fp in first_answers:  # a repair's answer: both calls were paid
                            resp = resp.model_copy(update={"usage": resp.usage + first_answers.pop(fp).usage})
                        elif resp.status == "unparsable" and self.repair_retry and fp in by_fp:
                            req = by_fp[fp][1]
                            first_answers[fp] = resp
                            retry[fp] = repairs[fp] = req.model_copy(update={"messages": repair_messages(
                                req.messages, resp.text, resp.error or "not valid JSON", req.json_schema)})
                            continue
                        await deliver(fp, resp)
                    # failed, expired or silently missing: resubmit those this call asked for, except
                    # rejected ones (a 400 comes back the same): rows at once
                    for fp in active[bid]["fingerprints"]:
                        if fp not in answered and fp in by_fp:
                            reason = (failed.get(fp) or whole
                                      or ("batch_failed", f"batch {batch.status}: no answer for the item"))
                            if reason[0] in REJECTION_KINDS:
                                stopping = not await deliver(fp, self._rejected(fp, reason, first_answers)) \
                                    or stopping
                                continue
                            retry[fp] = repairs.get(fp) or by_fp[fp][1]
                            why[fp] = reason
                            fatal = fatal or why[fp][0] in FATAL_KINDS
                    if journal is not None:
                        await asyncio.to_thread(journal.delete_state, f"{STATE_PREFIX}{bid}")
                    del active[bid]
                    if fatal or stopping:  # asking again cannot help: batches still running stay journaled
                        break
                if retry and not active and not (fatal or stopping) and round_ < self.max_resubmits:
                    round_ += 1
                    active.update(await self._submit(client, journal, retry, round_))
                    retry = {}
                if active and not (fatal or stopping):
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    await asyncio.sleep(self.poll_interval_s)
            for fp, first in first_answers.items():  # the first answer was paid for: keep it
                reason = "no round left for its repair" if fp in retry else "its repair was not answered"
                await deliver(fp, first.model_copy(update={"error": f"{first.error}; {reason}"}))
            for fp, (j, _) in by_fp.items():
                if fp in done:
                    continue
                if any(fp in s["fingerprints"] for s in active.values()):
                    kind, error = "batch_pending", "batch still running; a rerun collects it"
                else:
                    kind, error = why.get(fp, ("batch_failed", "no answer"))
                    error = f"{error} (after {round_} resubmission{'s' * (round_ != 1)})"
                await emit(j, self._response(fp, status="error", batch=True, error_kind=kind, error=error))
        except openai.OpenAIError as e:
            for fp, (j, _) in by_fp.items():
                if fp not in done:
                    await emit(j, self._response(fp, status="error", batch=True, error_kind=error_kind(e),
                                                 error=describe(e)[:500]))
        finally:
            await client.close()

