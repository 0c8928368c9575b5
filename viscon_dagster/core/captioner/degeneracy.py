"""Length and degeneracy of captions: how long, how repetitive, how many empty or cut off.

- length: words (whitespace tokens); the scorecard reports the mean and its ratio to the teacher's;
- repetition: the share of a caption's word 3-grams that repeat an earlier 3-gram of the same caption
  (1 - distinct / total, "rep-3" of Welleck et al. 2019); 0 for captions under 4 words;
- empty: nothing but whitespace;
- truncated: not empty and cut off: the model stopped at its token limit (finish reason `length`, when the
  backend reports it) or the caption does not end a sentence (`.`, `!`, `?`, a closing quote or bracket
  after one).
"""

from __future__ import annotations

import re

REPETITION_N = 3
_END = re.compile(r"[.!?…][\"'”’)\]]*\s*$")


def words(caption: str) -> list[str]:
    return caption.split()


def repetition(caption: str, n: int = REPETITION_N) -> float:
    w = [x.lower().strip(".,;:!?\"'") for x in words(caption)]
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return 0.0 if len(grams) < 2 else 1.0 - len(set(grams)) / len(grams)


def is_empty(caption: str) -> bool:
    return not caption.strip()


def is_truncated(caption: str, finish_reason: str | None = None) -> bool:
    if is_empty(caption):
        return False
    return finish_reason == "length" or not _END.search(caption)
