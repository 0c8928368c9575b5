"""A scripted teacher on loopback (OpenAI protocol) — a test double standing in for GPT-4V, which cannot
run here. Its captions are a learnable function of the request: a fixed frame plus the words the page
context puts first, so a student that learns from them must beat its untuned self on held-out pages."""

from __future__ import annotations

import asyncio
import re
import threading

from aiohttp import web


def caption_for(prompt: str) -> str:
    page = prompt.split("--- page ---", 1)[-1]
    words = re.findall(r"[a-z]+", page.lower())[:3]
    return f"a photo from the page about {' '.join(words) or 'nothing'} , shown on the page ."


class Teacher:
    def __init__(self):
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()

    async def _chat(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.json()
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        text = "".join(p.get("text", "") for p in user if p.get("type") == "text")
        return web.json_response({
            "id": "chatcmpl-teacher", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": caption_for(text)}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
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
