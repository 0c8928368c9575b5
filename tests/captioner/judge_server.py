"""A scripted judge on loopback (OpenAI protocol) — a test double standing in for a VLM judge (GPT-4o, a served
open VLM), which cannot run here. It reads the two captions of a judge request (core/captioner/judge.JUDGE) and
prefers by a rule, so a test knows every verdict in advance:

- a caption holding the planted marker `[bad]` loses to one without it; both or neither: by the next rules;
- `[first]` in either caption: the judge answers "A" whatever the order (a position-biased judge);
- `[mute]` in either caption: an answer that is not JSON (unparsable after the repair retry);
- otherwise, with `prefer="longer"` the longer caption wins, with `prefer="page"` the one using more distinct
  words of the page text (a crude "grounded in the page" rule); else, or when equal, a tie.

Every request is counted (`requests`) and the shown (A, B) pairs are kept (`shown`), for the swap and pay-once
checks.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading

from aiohttp import web

CAPTION = re.compile(r'Caption (A|B):\n"""(.*?)"""', re.S)
PAGE = re.compile(r"--- page ---\n(.*?)\n--- end of page ---", re.S)
WORD = re.compile(r"[a-z]+")


def verdict(a: str, b: str, prefer: str | None, page: str = "") -> str | None:
    """The winner ("A", "B", "tie"), or None for a non-JSON answer."""
    if "[mute]" in a or "[mute]" in b:
        return None
    if "[first]" in a or "[first]" in b:
        return "A"
    bad_a, bad_b = "[bad]" in a, "[bad]" in b
    if bad_a != bad_b:
        return "B" if bad_a else "A"
    if prefer == "longer":
        score_a, score_b = len(a), len(b)
    elif prefer == "page":
        words = set(WORD.findall(page.lower()))
        score_a, score_b = (len(set(WORD.findall(x.lower())) & words) for x in (a, b))
    else:
        return "tie"
    return "tie" if score_a == score_b else ("A" if score_a > score_b else "B")


class ScriptedJudge:
    def __init__(self, prefer: str | None = None):
        self.prefer = prefer
        self.requests = 0
        self.shown: list[tuple[str, str]] = []
        self.with_image = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        parts = user if isinstance(user, list) else [{"type": "text", "text": user}]
        self.with_image += any(p.get("type") == "image_url" for p in parts)
        text = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
        found = dict(CAPTION.findall(text))
        a, b = found.get("A", ""), found.get("B", "")
        self.shown.append((a, b))
        page = PAGE.search(text)
        winner = verdict(a, b, self.prefer, page.group(1) if page else "")
        content = "I cannot decide." if winner is None else json.dumps(
            {"winner": winner, "reason": f"rule: {'marker' if '[bad]' in a + b else 'length or tie'}"})
        return web.json_response({
            "id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320},
        })

    def start(self) -> str:
        async def setup():
            app = web.Application(client_max_size=64 << 20)
            app.router.add_post("/v1/chat/completions", self._chat)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        port = asyncio.run_coroutine_threadsafe(setup(), self._loop).result()
        return f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
