"""A scripted OpenAI-protocol server on loopback — a test double, not a model.

It exists for outputs a real small model cannot be made to give on demand (an empty caption, a
refusal, invalid JSON, an MCQ whose answer is not among its options, duplicate questions). The real
`openai` client and our HTTP backend talk to it over real HTTP. Answers are chosen by a stable hash
of the request's image or caption, so each kind of bad output lands on a fixed share of requests.
Every request is counted (`server.requests`), for pay-once checks. Like a real server it can refuse
a wrong key (`api_key`: 401) or a model it does not serve (`models`: 404), it can reject requests as
invalid (`reject`: 400 with that message, as a server does for a model that takes no images; to every
request, or to the first `rejects`), and it can die after `die_after` answers: it stops listening (new
connections are refused) and drops requests on open ones. `answer` replaces the script (a function of the
request body returning (content, refusal), as `answer_for`).
`start(port)` brings a server back on the port of one that died.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading

from aiohttp import web

GOOD_CAPTION = ("A sunlit stone harbour in Lisbon with blue fishing boats, photographed from the old market "
                "hall during the annual harvest festival described on the page.")
CAPTION_OUTCOMES = ["good", "good", "good", "empty", "refusal"]
QA_OUTCOMES = ["good", "good", "invalid_json", "bad_letter", "duplicate_options", "duplicate_questions"]


def good_qa(n: int = 3, m: int = 2, salt: str = "") -> dict:
    free = [{"question": q, "answer": a} for q, a in [
        (f"Where was the photo taken{salt}?", "In the harbour of Lisbon."),
        (f"What colour are the boats{salt}?", "They are blue."),
        (f"Which event is shown{salt}?", "The annual harvest festival."),
    ][:n]]
    mcq = [{"question": f"Which city is shown{salt}?", "options": ["Lisbon", "Porto", "Faro", "Braga"], "answer": "A"},
           {"question": f"What is moored in the harbour{salt}?", "options": ["Cars", "Boats", "Tents", "Kites"],
            "answer": "B"}][:m]
    return {"free_form": free, "mcq": mcq}


def _pick(outcomes: list[str], key: str) -> str:
    return outcomes[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(outcomes)]


def answer_for(body: dict) -> tuple[str | None, str | None]:
    """(content, refusal) for one chat completion request."""
    # the first user message decides, so a repair retry (a later turn) gets the same kind of answer
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    parts = user if isinstance(user, list) else [{"type": "text", "text": user}]
    image = next((p["image_url"]["url"] for p in parts if p.get("type") == "image_url"), None)
    text = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
    if image is not None:  # a caption request
        outcome = _pick(CAPTION_OUTCOMES, image)
        good = f"{GOOD_CAPTION} Frame {hashlib.sha256(image.encode()).hexdigest()[:6]}."  # one caption per image
        return {"good": good, "empty": "", "refusal": "I'm sorry, but I can't help with that."}[outcome], None
    salt = hashlib.sha256(text.encode()).hexdigest()[:6]
    outcome = _pick(QA_OUTCOMES, text)
    if outcome == "invalid_json":
        return "Here are some questions: Where? What?", None
    qa = good_qa(salt=f" ({salt})")
    if outcome == "bad_letter":
        qa["mcq"][0]["answer"] = "E"
    elif outcome == "duplicate_options":
        qa["mcq"][1]["options"] = ["Boats", "boats", "Tents", "Kites"]
    elif outcome == "duplicate_questions":
        qa["free_form"][1]["question"] = qa["free_form"][0]["question"]
    return json.dumps(qa), None


class ScriptedOpenAI:
    def __init__(self, latency_s: float = 0.0, capacity: int = 1000, api_key: str | None = None,
                 models: set[str] | None = None, die_after: int | None = None, reject: str | None = None,
                 rejects: int | None = None, answer=None):
        self.answer = answer or answer_for
        self.requests, self.answered, self.latency_s = 0, 0, latency_s
        self.api_key, self.models, self.die_after = api_key, models, die_after
        self.reject, self.rejects, self.rejected = reject, rejects, 0
        self._capacity = capacity  # requests served at once; the rest wait, as on a busy server
        self._slots: asyncio.Semaphore | None = None
        self.port = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _dead(self) -> bool:
        return self.die_after is not None and self.answered >= self.die_after

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided.", "type":
                                                "invalid_request_error", "code": "invalid_api_key"}}, status=401)
        if self.models is not None and body["model"] not in self.models:  # vLLM's answer
            return web.json_response({"error": {"message": f"The model `{body['model']}` does not exist.",
                                                "type": "NotFoundError", "code": 404}}, status=404)
        if self.reject is not None and (self.rejects is None or self.rejected < self.rejects):
            self.rejected += 1  # vLLM's shape of a 400
            return web.json_response({"error": {"message": self.reject, "type": "BadRequestError", "param": None,
                                                "code": 400}}, status=400)
        async with self._slots:
            await asyncio.sleep(self.latency_s)
        if self._dead():  # the process is gone: no answer on a connection that was already open
            request.transport.close()
            await asyncio.sleep(0.05)
            raise ConnectionResetError("the server died")
        content, refusal = self.answer(body)
        self.answered += 1
        if self._dead():
            asyncio.get_running_loop().create_task(self._site.stop())  # stop listening: connections refused
        return web.json_response({
            "id": "chatcmpl-scripted", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 40, "total_tokens": 140},
        })

    def start(self, port: int = 0) -> str:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app)
        self._thread.start()

        async def setup():
            self._slots = asyncio.Semaphore(self._capacity)
            await runner.setup()

        asyncio.run_coroutine_threadsafe(setup(), self._loop).result()
        site = web.TCPSite(runner, "127.0.0.1", port)
        asyncio.run_coroutine_threadsafe(site.start(), self._loop).result()
        self.port = site._server.sockets[0].getsockname()[1]
        self._runner, self._site = runner, site
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
