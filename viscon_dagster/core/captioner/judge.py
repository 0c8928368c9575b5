"""Pairwise judging of captions by a judge model (CapArena, arXiv 2503.12329; CLAIR, arXiv 2310.12971).

For one image and the page context its captioner was given, the judge sees two captions, A and B, and
answers with JSON `{"winner": "A" | "B" | "tie", "reason": "..."}` (structured output). Each pair is asked
twice, the second time with A and B swapped, because judges favour a position. Per item, from the tuned
captioner's side:

- win / loss: both orders agree that the tuned caption is better / worse;
- tie: both orders say tie, or the two captions are the same text (then nothing is asked);
- inconsistent: the two orders disagree (a position effect): counted as such, and as half a win;
- failed: the judge gave no usable verdict in one order or both (refused, unparsable, an error): left out of
  the win-rate and counted.

Win-rate = (wins + ½ ties + ½ inconsistent) / judged items, with a bootstrap interval over items; above 0.5
is better than the opponent. The prompt's version (a digest of its text, `Prompt.version`) and the judge's
model label go into the evaluation's code version and metadata.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from viscon_dagster.core.captioner.bootstrap import Interval, Statistic, interval
from viscon_dagster.core.chain.prompts import Prompt
from viscon_dagster.core.models.request import ImageRef, Request, Response, SamplingParams

JUDGE = Prompt(
    "caption-judge",
    "You compare two captions of the same image for a vision-language dataset. A good caption describes what "
    "is visible and uses the web page the image appears on correctly: the names, places, numbers and dates it "
    "gives come from the page or the image, never invented. It is fluent, specific and not repetitive. Judge "
    "the content, not the length or the order the captions are shown in.",
    """The image appears on a web page. The page text the captioner was given:
--- page ---
{context}
--- end of page ---

Caption A:
\"\"\"{a}\"\"\"

Caption B:
\"\"\"{b}\"\"\"

Which caption is better for this image and page? Answer with JSON only: \
{{"winner": "A", "B" or "tie", "reason": "one short sentence"}}""")

VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}, "reason": {"type": "string"}},
    "required": ["winner", "reason"],
    "additionalProperties": False,
}
OUTCOMES = ("win", "loss", "tie", "inconsistent", "failed")
SCORE = {"win": 1.0, "loss": 0.0, "tie": 0.5, "inconsistent": 0.5}


def judge_request(context: str, a: str, b: str, image: ImageRef | None, params: SamplingParams,
                  meta: dict | None = None) -> Request:
    text = JUDGE.template.format(context=context, a=a, b=b)
    return Request.user(text, images=[image] if image is not None else [], system=JUDGE.system,
                        json_schema=VERDICT_SCHEMA, schema_name="verdict", params=params, meta=meta or {})


@dataclass(frozen=True)
class Battle:
    """One comparison of the tuned caption with an opponent's for one item: the two orders' requests."""

    item: int
    tuned: str
    other: str
    tuned_first: Request | None  # None when the captions are the same text
    other_first: Request | None


def battles(contexts: list[str], tuned: list[str], other: list[str], images: list[ImageRef | None],
            params: SamplingParams, opponent: str) -> list[Battle]:
    out = []
    for i, (ctx, t, o, img) in enumerate(zip(contexts, tuned, other, images, strict=True)):
        if t.strip() == o.strip():
            out.append(Battle(i, t, o, None, None))
            continue
        meta = {"item": i, "opponent": opponent}
        out.append(Battle(i, t, o, judge_request(ctx, t, o, img, params, {**meta, "order": "tuned_first"}),
                          judge_request(ctx, o, t, img, params, {**meta, "order": "other_first"})))
    return out


def _winner(r: Response | None) -> str | None:
    if r is None or not r.ok or not isinstance(r.parsed, dict):
        return None
    w = r.parsed.get("winner")
    return w if w in ("A", "B", "tie") else None


def outcome(b: Battle, tuned_first: Response | None, other_first: Response | None) -> tuple[str, list[str]]:
    """The item's outcome for the tuned captioner and the tuned side's verdict in each order (a missing answer
    is a failed verdict)."""
    if b.tuned_first is None:
        return "tie", ["same", "same"]
    w1, w2 = _winner(tuned_first), _winner(other_first)
    side = [{"A": "win", "B": "loss", "tie": "tie", None: "failed"}[w1],
            {"B": "win", "A": "loss", "tie": "tie", None: "failed"}[w2]]
    if "failed" in side:
        return "failed", side
    return (side[0] if side[0] == side[1] else "inconsistent"), side


@dataclass
class WinRate:
    opponent: str
    counts: dict[str, int]
    win_rate: Interval | None  # None when no item was judged
    p_value: float | None  # share of resamples with win-rate <= 0.5 (tuned not better)
    significant: bool  # the interval lies above 0.5
    position_a_share: float | None  # how often the judge picked the first caption shown (position bias)
    outcomes: list[str] = field(default_factory=list)  # per item
    reasons: list[list[str]] = field(default_factory=list)  # per item: the judge's reason in each order

    def as_dict(self) -> dict:
        return {"opponent": self.opponent, "counts": self.counts,
                "win_rate": self.win_rate.__dict__ if self.win_rate else None, "p_value": self.p_value,
                "significant": self.significant, "position_a_share": self.position_a_share}


def win_rate(opponent: str, fights: list[Battle], answers: dict[int, tuple[Response, Response]],
             idx: np.ndarray) -> WinRate:
    """Tally `fights` with the judge's `answers` (by item: tuned-first, other-first) on the resamples `idx`."""
    outcomes, reasons, firsts = [], [], []
    for b in fights:
        r1, r2 = answers.get(b.item, (None, None))
        o, _ = outcome(b, r1, r2)
        outcomes.append(o)
        reasons.append([(r.parsed or {}).get("reason", "") if r is not None and isinstance(r.parsed, dict) else ""
                        for r in (r1, r2)])
        firsts += [w == "A" for w in (_winner(r1), _winner(r2)) if w in ("A", "B")]
    counts = {k: c for k, c in Counter(outcomes).items()}
    counts = {k: counts.get(k, 0) for k in OUTCOMES}
    judged = np.array([SCORE.get(o, np.nan) for o in outcomes])
    keep = ~np.isnan(judged)
    position = round(float(np.mean(firsts)), 4) if firsts else None
    if not keep.any():
        return WinRate(opponent, counts, None, None, False, position, outcomes, reasons)
    # items are resampled as for every other metric; failed items add nothing to a resample
    stat = Statistic.ratio(np.where(keep, judged, 0.0), keep.astype(float))
    iv = interval(stat, idx)
    samples = stat.resampled(idx)
    samples = samples[~np.isnan(samples)]
    p = round(float(np.mean(samples <= 0.5)), 4)
    return WinRate(opponent, counts, iv, p, iv.low > 0.5, position, outcomes, reasons)
