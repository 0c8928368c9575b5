"""How answerable a Q&A pair is from its caption alone — the "leaky" property, measured.

The score is the share of the answer's content words that appear in the caption (lower-cased,
stop words and punctuation removed; a light plural/possessive fold). 1.0: everything the answer
says is in the caption; 0.0: nothing is. For an MCQ the answer is the text of the correct option.
"""

from __future__ import annotations

import re
import statistics

STOP_WORDS = frozenset("""a an the and or but of to in on at by for with from as is are was were be been
being it its this that these those there here he she they them his her their we you i me my our your
what which who whom whose when where why how do does did has have had not no yes so than then very
can could would should will shall may might must into over under about above below up down out off""".split())
_WORD = re.compile(r"[a-z0-9]+")


def content_words(text: str) -> set[str]:
    words = (w.removesuffix("'s") for w in _WORD.findall(text.lower().replace("’", "'")))
    return {_fold(w) for w in words if w not in STOP_WORDS}


def _fold(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def leakage_score(answer: str, caption: str) -> float:
    answer_words = content_words(answer)
    if not answer_words:
        return 0.0
    return round(len(answer_words & content_words(caption)) / len(answer_words), 4)


def leakage_summary(scores: list[float]) -> dict[str, float]:
    if not scores:
        return {"count": 0}
    return {"count": len(scores), "mean": round(statistics.fmean(scores), 4),
            "median": round(statistics.median(scores), 4),
            "share_fully_answerable": round(sum(s >= 0.999 for s in scores) / len(scores), 4),
            "share_unanswerable": round(sum(s == 0 for s in scores) / len(scores), 4)}
