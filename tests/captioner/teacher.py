"""A scripted teacher on loopback (OpenAI protocol) — a test double standing in for GPT-4V, which cannot
run here. Its captions are a learnable function of the request: a fixed frame plus the words the page
context puts first, so a student that learns from them must beat its untuned self on held-out pages."""

from __future__ import annotations

import re

from tests.loopback_chat import LoopbackChat


def caption_for(prompt: str) -> str:
    page = prompt.split("--- page ---", 1)[-1]
    words = re.findall(r"[a-z]+", page.lower())[:3]
    return f"a photo from the page about {' '.join(words) or 'nothing'} , shown on the page ."


class Teacher(LoopbackChat):
    def answer(self, body: dict, parts: list[dict], text: str) -> str:
        return caption_for(text)
