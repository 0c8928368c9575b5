"""The evaluation gate: a small policy over the scorecard that decides whether a checkpoint may caption
VisCon-1M (`gate.json`, read by resources/captioner_backend.py).

Rules, each with a setting (the defaults are `GatePolicy()`):

1. **gains** (default CIDEr-D): the tuned captioner beats its untuned base on each named metric;
2. **judge** (default on): when a judge ran, the tuned captioner's win-rate against the base is above 0.5;
3. **faithfulness margin** (default 0.05): the tuned captioner's context faithfulness is not below the
   teacher's by more than the margin (a contextual captioner must not learn to invent names and numbers);
   skipped, and said so, when neither asserts any name, number or date;
4. **significance** (default on): a gain counts only when its paired 95% bootstrap interval excludes zero
   (for the judge: the win-rate's interval lies above 0.5), and faithfulness fails only when the interval
   of tuned − teacher lies wholly below −margin. Off: the point estimates decide.

The gate passes when every rule does; each rule's outcome and the numbers it read are recorded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from viscon_dagster.core.captioner.scorecard import BY_KEY, TEACHER, Scorecard

GATE_METRICS = ("bleu", "sentence_bleu", "rouge_l", "cider", "clip_score", "context_use")


@dataclass(frozen=True)
class GatePolicy:
    gains: tuple[str, ...] = ("cider",)
    judge: bool = True
    faithfulness_margin: float | None = 0.05
    significance: bool = True

    def __post_init__(self):
        unknown = sorted(set(self.gains) - set(GATE_METRICS))
        if unknown:
            raise ValueError(f"gate gains: no metric {', '.join(unknown)}; use {', '.join(GATE_METRICS)}")

    def as_dict(self) -> dict:
        return {**asdict(self), "gains": list(self.gains)}


@dataclass(frozen=True)
class Rule:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    rules: list[Rule] = field(default_factory=list)

    def failures(self) -> list[str]:
        return [f"{r.name}: {r.detail}" for r in self.rules if not r.passed]

    def as_dict(self) -> dict:
        return {"passed": self.passed, "rules": [r.as_dict() for r in self.rules]}


def _gain_rule(card: Scorecard, metric: str, significance: bool) -> Rule:
    p = card.pair(metric, "tuned", "base")
    title = BY_KEY[metric].title
    if p is None or math.isnan(p.diff.value):
        return Rule(f"gain:{metric}", False, f"{title} was not scored")
    d = p.diff
    ok = p.significant if significance else d.value > 0
    need = "its 95% interval must exclude 0" if significance else "it must be positive"
    return Rule(f"gain:{metric}", ok, f"tuned − base {d.value:+.4g} [{d.low:+.4g}, {d.high:+.4g}], p={p.p_value} "
                                      f"({need})")


def _judge_rule(card: Scorecard, significance: bool) -> Rule | None:
    w = card.judge.get("base")
    if w is None:
        return None
    if w.win_rate is None:
        return Rule("judge:vs_base", False, f"the judge gave no usable verdict ({w.counts})")
    i = w.win_rate
    ok = w.significant if significance else i.value > 0.5
    need = "its 95% interval must lie above 0.5" if significance else "it must exceed 0.5"
    return Rule("judge:vs_base", ok, f"win-rate of tuned vs base {i.value:.3f} [{i.low:.3f}, {i.high:.3f}], "
                                     f"p={w.p_value} ({need}; {w.counts})")


def _faithfulness_rule(card: Scorecard, margin: float, significance: bool) -> Rule:
    p = card.pair("faithfulness", "tuned", TEACHER)
    if p is None or math.isnan(p.diff.value):
        return Rule("faithfulness", True, "not applicable: the tuned captions or the teacher's assert no name, "
                                          "number or date")
    d = p.diff
    worse = d.high < -margin if significance else d.value < -margin
    how = "its interval lies wholly below" if significance else "it is below"
    return Rule("faithfulness", not worse, f"tuned − teacher {d.value:+.3f} [{d.low:+.3f}, {d.high:+.3f}]; fails when "
                                           f"{how} −{margin:g}")


def decide(card: Scorecard, policy: GatePolicy) -> GateDecision:
    rules = [_gain_rule(card, m, policy.significance) for m in policy.gains]
    if policy.judge:
        rule = _judge_rule(card, policy.significance)
        if rule is not None:
            rules.append(rule)
    if policy.faithfulness_margin is not None:
        rules.append(_faithfulness_rule(card, policy.faithfulness_margin, policy.significance))
    return GateDecision(all(r.passed for r in rules), rules)
