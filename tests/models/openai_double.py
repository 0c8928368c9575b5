"""A fault-injection double of the OpenAI HTTP protocol, on loopback, for what a real server cannot be
made to do on demand: 429 with Retry-After, 500s, timeouts, dropped connections, malformed JSON,
refusals, servers that reject `response_format`, and the Batch API's files/batches endpoints with
failed and expired items. It is a test double, not a model: answers are canned, derived from the
request. The real `openai` client talks to it over real HTTP.

Faults are asked for by directives in the last user message, counted per distinct prompt, e.g.
`[[429x2]]` (first two calls get 429 + Retry-After), `[[500x1]]`, `[[timeoutx1]]`, `[[dropx1]]`,
`[[badjsonx1]]` (first answer is not JSON), `[[badjson]]` (never JSON), `[[refuse]]`,
`[[batchfail]]` (the item fails inside a batch once), `[[expire]]` (the batch expires with the item
unanswered once), `[[toolong]]` (400 context_length_exceeded, as OpenAI words it, with the prompt's size).
Whole-server faults are settings: `api_key` (anything else gets 401 on every endpoint, the message
echoing the key sent, as a careless server would), `models` (others get 404 model_not_found),
`quota_exhausted` (429 insufficient_quota), `reject` (400 invalid_request_error with this message to
every chat request and batch item; `{n}` in it becomes a number that differs per request). Run standalone
(`python openai_double.py --port 8999 --latency 0.2`) for benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import threading
import time
import uuid

from aiohttp import web

_DIRECTIVE = re.compile(r"\[\[(\w+?)(?:x(\d+))?\]\]")
_SCHEMA_IN_PROMPT = re.compile(r"^JSON schema: (\{.*\})$", re.M)


def instance_of(schema: dict) -> object:
    """A minimal value that validates against `schema` (the subset our prompts use)."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    t = schema.get("type")
    if isinstance(t, list):
        t = t[0]
    if t == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: instance_of(props.get(k, {"type": "string"})) for k in schema.get("required", list(props))}
    if t == "array":
        n = schema.get("minItems", 1)
        item = schema.get("items", {"type": "string"})
        if schema.get("uniqueItems") and item.get("type") == "string":
            return [f"item {i}" for i in range(n)]
        return [instance_of(item) for _ in range(n)]
    if t in ("integer", "number"):
        return schema.get("minimum", 0)
    if t == "boolean":
        return True
    return "ok " * max(1, schema.get("minLength", 2) // 3 + 1)


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


class OpenAIDouble:
    """Serve on 127.0.0.1 in a background thread. `calls` counts chat requests (batch items excluded)."""

    def __init__(self, latency_s: float = 0.0, supports_response_format: bool = True,
                 retry_after_s: float = 0.2, hang_s: float = 5.0, batch_polls_to_complete: int = 1,
                 api_key: str | None = None, models: set[str] | None = None, quota_exhausted: bool = False,
                 reject: str | None = None):
        self.api_key, self.models, self.quota_exhausted = api_key, models, quota_exhausted
        self.reject, self.rejections = reject, 0
        self.latency_s = latency_s
        self.supports_response_format = supports_response_format
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.batch_polls_to_complete = batch_polls_to_complete
        self.calls = 0
        self.log: list[dict] = []  # every chat request body received (not for benchmarks: memory)
        self.keep_log = True
        self.fault_counts: collections.Counter = collections.Counter()
        self.status_counts: collections.Counter = collections.Counter()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.batch_creates = 0
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- answers ------------------------------------------------------------------------------
    def _fault(self, key: str, name: str, times: int | None) -> bool:
        """True while the fault `name` for this prompt has fired fewer than `times` times (None: always)."""
        k = (key, name)
        if times is not None and self.fault_counts[k] >= times:
            return False
        self.fault_counts[k] += 1
        return True

    def _directives(self, text: str) -> dict[str, int | None]:
        return {m.group(1): int(m.group(2)) if m.group(2) else None for m in _DIRECTIVE.finditer(text)}

    def answer(self, body: dict) -> tuple[int, dict, dict]:
        """(status, headers, json) for a chat completion body; faults that need I/O are handled by the caller."""
        msgs = body.get("messages", [])
        users = [m for m in msgs if m.get("role") == "user"]
        first_user = _text_of(users[0]["content"]) if users else ""
        last = _text_of(users[-1]["content"]) if users else ""
        directives = self._directives(first_user)
        key = first_user
        rf = body.get("response_format")
        if self.models is not None and body.get("model") not in self.models:
            return 404, {}, {"error": {"message": f"The model `{body.get('model')}` does not exist or you do not "
                                                  "have access to it.", "type": "invalid_request_error",
                                       "param": None, "code": "model_not_found"}}
        if self.quota_exhausted:
            return 429, {}, {"error": {"message": "You exceeded your current quota, please check your plan and "
                                                  "billing details.", "type": "insufficient_quota", "param": None,
                                       "code": "insufficient_quota"}}
        size = sum(len(_text_of(m.get("content", ""))) for m in msgs)
        if self.reject is not None:
            self.rejections += 1
            return 400, {}, {"error": {"message": self.reject.replace("{n}", str(size + 1000 * self.rejections)),
                                       "type": "invalid_request_error", "param": None, "code": None}}
        if "toolong" in directives:
            return 400, {}, {"error": {"message": f"This model's maximum context length is 128000 tokens. However, "
                                                  f"your messages resulted in {128000 + size} tokens. Please reduce "
                                                  "the length of the messages.", "type": "invalid_request_error",
                                       "param": "messages", "code": "context_length_exceeded"}}
        if rf and not self.supports_response_format:
            return 400, {}, {"error": {"message": "response_format is not supported", "type": "invalid_request_error",
                                       "param": "response_format", "code": None}}
        for name, status in (("429", 429), ("500", 500)):
            if name in directives and self._fault(key, name, directives[name]):
                headers = {"Retry-After": str(self.retry_after_s)} if status == 429 else {}
                return status, headers, {"error": {"message": f"injected {status}", "type": "injected"}}
        refusal = None
        content: str | None
        schema = (rf or {}).get("json_schema", {}).get("schema") if rf else None
        if schema is None and (m := _SCHEMA_IN_PROMPT.search(last)):
            schema = json.loads(m.group(1))
        if "refuse" in directives:
            content, refusal = None, "I'm sorry, I can't help with that."
            if not rf:  # plain-text servers refuse in the text
                content, refusal = "I'm sorry, but I can't help with that request.", None
        elif "badjson" in directives and self._fault(key, "badjson", directives["badjson"]):
            content = '{"answer": "unterminated'
        elif schema is not None:
            value = json.dumps(instance_of(schema))
            content = value if rf else f"Sure! Here it is:\n```json\n{value}\n```"
        else:
            content = f"echo: {last[:200]}"
        n_in = sum(len(_text_of(m.get("content", ""))) for m in msgs) // 4 + 1
        n_out = len(content or refusal or "") // 4 + 1
        return 200, {}, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "double"),
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out},
        }

    # -- HTTP handlers --------------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls += 1
        if self.keep_log:
            self.log.append(body)
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        first_user = _text_of(users[0]["content"]) if users else ""
        d = self._directives(first_user)
        if "drop" in d and self._fault(first_user, "drop", d["drop"]):
            request.transport.close()  # connection dropped without a response
            await asyncio.sleep(0.05)
            raise ConnectionResetError("dropped by the double")
        if "timeout" in d and self._fault(first_user, "timeout", d["timeout"]):
            await asyncio.sleep(self.hang_s)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        status, headers, payload = self.answer(body)
        self.status_counts[status] += 1
        return web.json_response(payload, status=status, headers=headers)

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        f = form["file"]
        data = f.file.read()
        fid = f"file-{uuid.uuid4().hex[:16]}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                           "filename": f.filename, "purpose": form.get("purpose", "batch"),
                           "status": "processed", "_data": data}
        return web.json_response({k: v for k, v in self.files[fid].items() if not k.startswith("_")})

    async def _file_content(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["fid"])
        if f is None:
            return web.json_response({"error": {"message": "no such file"}}, status=404)
        return web.Response(body=f["_data"], content_type="application/octet-stream")

    def _batch_view(self, b: dict) -> dict:
        return {k: v for k, v in b.items() if not k.startswith("_")}

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.batch_creates += 1
        bid = f"batch_{uuid.uuid4().hex[:16]}"
        n = len(self.files[body["input_file_id"]]["_data"].splitlines())
        self.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window", "24h"), "status": "validating",
            "created_at": int(time.time()), "output_file_id": None, "error_file_id": None, "errors": None,
            "request_counts": {"total": n, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
            "_polls": 0, "_seq": self.batch_creates,
        }
        return web.json_response(self._batch_view(self.batches[bid]))

    def _run_batch(self, b: dict) -> None:
        """Answer every line; items with batch faults land in the error file or stay unanswered."""
        out, err = [], []
        expired = False
        for line in self.files[b["input_file_id"]]["_data"].decode().splitlines():
            item = json.loads(line)
            body = item["body"]
            users = [m for m in body["messages"] if m["role"] == "user"]
            text = _text_of(users[0]["content"]) if users else ""
            d = self._directives(text)
            if "expire" in d and self._fault(text, "expire", d["expire"] or 1):
                expired = True
                continue  # unanswered: expired before it ran
            if "batchfail" in d and self._fault(text, "batchfail", d["batchfail"] or 1):
                err.append({"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": item["custom_id"],
                            "response": {"status_code": 500, "request_id": "x",
                                         "body": {"error": {"message": "injected item failure"}}},
                            "error": None})
                continue
            status, _, payload = self.answer(body)
            rec = {"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": item["custom_id"],
                   "response": {"status_code": status, "request_id": "x", "body": payload}, "error": None}
            (out if status == 200 else err).append(rec)

        def store(rows):
            if not rows:
                return None
            fid = f"file-{uuid.uuid4().hex[:16]}"
            data = ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
            self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                               "filename": "out.jsonl", "purpose": "batch_output", "status": "processed",
                               "_data": data}
            return fid

        b.update(status="expired" if expired else "completed", output_file_id=store(out),
                 error_file_id=store(err),
                 request_counts={"total": b["request_counts"]["total"], "completed": len(out), "failed": len(err)})

    async def _get_batch(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["bid"])
        if b is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        b["_polls"] += 1
        if b["status"] in ("validating", "in_progress"):
            if b["_polls"] > self.batch_polls_to_complete:
                self._run_batch(b)
            else:
                b["status"] = "in_progress"
        return web.json_response(self._batch_view(b))

    async def _list_batches(self, request: web.Request) -> web.Response:
        """Newest first, `limit` per page, `after` = the last id of the previous page (as the real API)."""
        order = sorted(self.batches.values(), key=lambda b: (b["created_at"], b["_seq"]), reverse=True)
        after = request.query.get("after")
        if after:
            ids = [b["id"] for b in order]
            order = order[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query.get("limit", 20))
        page = [self._batch_view(b) for b in order[:limit]]
        return web.json_response({"object": "list", "data": page, "has_more": len(order) > limit,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None})

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.api_key is not None and sent != self.api_key:
            self.calls += request.path.endswith("/chat/completions")
            self.status_counts[401] += 1
            return web.json_response({"error": {"message": f"Incorrect API key provided: {sent}.",
                                                "type": "invalid_request_error", "param": None,
                                                "code": "invalid_api_key"}}, status=401)
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[self._auth])
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{fid}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches", self._list_batches)
        app.router.add_get("/v1/batches/{bid}", self._get_batch)
        return app

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> OpenAIDouble:
        ready = threading.Event()

        def serve():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(self.app(), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", port, backlog=4096)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            fut.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8999)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    d = OpenAIDouble(latency_s=args.latency)
    d.keep_log = False
    d.start(args.port)
    print(f"listening on {d.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        d.stop()


if __name__ == "__main__":
    main()
