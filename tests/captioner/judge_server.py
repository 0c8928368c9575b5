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

import json
import re

from tests.loopback_chat import LoopbackChat

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


class ScriptedJudge(LoopbackChat):
    usage = {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320}

    def __init__(self, prefer: str | None = None):
        super().__init__()
        self.prefer = prefer
        self.shown: list[tuple[str, str]] = []
        self.with_image = 0

    def answer(self, body: dict, parts: list[dict], text: str) -> str:
        self.with_image += any(p.get("type") == "image_url" for p in parts)
        found = dict(CAPTION.findall(text))
        a, b = found.get("A", ""), found.get("B", "")
        self.shown.append((a, b))
        page = PAGE.search(text)
        winner = verdict(a, b, self.prefer, page.group(1) if page else "")
        return "I cannot decide." if winner is None else json.dumps(
            {"winner": winner, "reason": f"rule: {'marker' if '[bad]' in a + b else 'length or tie'}"})
