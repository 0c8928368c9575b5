"""A chat-completions server on loopback (the OpenAI protocol's one route), run on its own event-loop thread, for
the scripted test doubles that stand in for models which cannot run here (tests/captioner/teacher.py, judge_server.py).
A subclass says what it answers: `answer(body, text) -> str`, `text` being the user turn's text."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class LoopbackChat:
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}

    def __init__(self):
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    def answer(self, body: dict, parts: list[dict], text: str) -> str:
        raise NotImplementedError

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        parts = user if isinstance(user, list) else [{"type": "text", "text": user}]
        text = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
        return web.json_response({
            "id": f"chatcmpl-{type(self).__name__.lower()}", "object": "chat.completion", "created": 0,
            "model": body["model"], "usage": self.usage,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.answer(body, parts, text)}}],
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
