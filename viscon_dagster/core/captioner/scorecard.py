"""The captioner's scorecard: every metric of the held-out captions, per system, with paired 95% intervals.

Systems are named caption lists over the same held-out items (the evaluation: `base`, `tuned`, and `teacher`,
whose captions are the references). Metrics (`METRICS`):

| metric | from | better | applies to the teacher |
|---|---|---|---|
| corpus BLEU, mean sentence BLEU, ROUGE-L F1, CIDEr-D | core/captioner/metrics.py | higher | no (it is the reference) |
| CLIPScore | core/captioner/clipscore.py (when a checkpoint is set) | higher | yes |
| context faithfulness, hallucination rate, context use | core/captioner/faithfulness.py | higher, lower, higher | yes |
| mean length, length ÷ teacher's | core/captioner/degeneracy.py | — | yes, — |
| repetition (rep-3), empty, truncated | core/captioner/degeneracy.py | lower | yes |

Judge win-rates (core/captioner/judge.py) join as their own section. Every interval comes from one matrix of
resampled items (core/captioner/bootstrap.py), so every comparison is paired.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from viscon_dagster.core.captioner import degeneracy
from viscon_dagster.core.captioner.bootstrap import Interval, Paired, Statistic, interval, paired, resample_indices
from viscon_dagster.core.captioner.faithfulness import Context, faithfulness
from viscon_dagster.core.captioner.judge import WinRate
from viscon_dagster.core.captioner.metrics import ReferenceScorer

TEACHER = "teacher"
SCORECARD_REVISION = 1  # bump when a metric's rule changes what it scores (enters the code version)


@dataclass(frozen=True)
class MetricDef:
    key: str
    title: str
    better: str | None  # "higher", "lower" or None (no good direction: length)
    teacher: bool  # scored for the teacher's own captions too
    scale: str = "score"  # "score" (as is) or "share" (0–1, shown as %)


METRICS = [
    MetricDef("bleu", "corpus BLEU", "higher", False),
    MetricDef("sentence_bleu", "mean sentence BLEU", "higher", False),
    MetricDef("rouge_l", "ROUGE-L F1", "higher", False),
    MetricDef("cider", "CIDEr-D", "higher", False),
    MetricDef("clip_score", "CLIPScore", "higher", True),
    MetricDef("faithfulness", "context faithfulness", "higher", True, "share"),
    MetricDef("hallucination_rate", "contextual hallucination rate", "lower", True, "share"),
    MetricDef("context_use", "page facts used per caption", "higher", True),
    MetricDef("length", "mean length (words)", None, True),
    MetricDef("length_ratio", "length ÷ teacher's", None, False),
    MetricDef("repetition", "repetition (rep-3)", "lower", True, "share"),
    MetricDef("empty_rate", "empty captions", "lower", True, "share"),
    MetricDef("truncated_rate", "truncated captions", "lower", True, "share"),
]
BY_KEY = {m.key: m for m in METRICS}


def _nan_interval() -> Interval:
    return Interval(float("nan"), float("nan"), float("nan"))


def item_values(captions: list[str], contexts: list[Context], finish_reasons: list[str | None] | None = None
                ) -> dict[str, np.ndarray]:
    """The reference-free per-item values of one system's captions."""
    finish = finish_reasons or [None] * len(captions)
    faith = [faithfulness(c, ctx) for c, ctx in zip(captions, contexts, strict=True)]
    return {
        "asserted": np.array([f.asserted for f in faith], dtype=float),
        "supported": np.array([f.supported for f in faith], dtype=float),
        "hallucinates": np.array([f.hallucinates for f in faith], dtype=float),
        "length": np.array([len(degeneracy.words(c)) for c in captions], dtype=float),
        "repetition": np.array([degeneracy.repetition(c) for c in captions]),
        "empty": np.array([degeneracy.is_empty(c) for c in captions], dtype=float),
        "truncated": np.array([degeneracy.is_truncated(c, f) for c, f in zip(captions, finish)], dtype=float),
    }


@dataclass
class Scorecard:
    n: int
    systems: dict[str, str]  # name -> model label
    metrics: dict[str, dict]  # key -> {"scores": {system: Interval}, "pairs": {"a_vs_b": Paired}}
    comparisons: list[tuple[str, str]]
    resamples: int
    seed: int
    bleu_signature: str
    per_item: dict[str, dict[str, list]]  # system -> column -> values
    judge: dict[str, WinRate] = field(default_factory=dict)  # opponent -> tuned's win-rate against it
    skipped: dict[str, str] = field(default_factory=dict)  # what was not scored, and why

    def score(self, metric: str, system: str) -> Interval | None:
        return self.metrics.get(metric, {}).get("scores", {}).get(system)

    def pair(self, metric: str, a: str, b: str) -> Paired | None:
        return self.metrics.get(metric, {}).get("pairs", {}).get(f"{a}_vs_{b}")

    def as_dict(self) -> dict:
        def clean(x):
            if isinstance(x, float) and math.isnan(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            return x

        metrics = {k: {"title": BY_KEY[k].title, "better": BY_KEY[k].better,
                       "scores": {s: clean(i.__dict__) for s, i in v["scores"].items()},
                       **{p: clean(c.as_dict()) for p, c in v["pairs"].items()}}
                   for k, v in self.metrics.items()}
        return {"n": self.n, "systems": self.systems, "resamples": self.resamples, "seed": self.seed,
                "bleu_signature": self.bleu_signature, "metrics": metrics,
                "judge": {k: w.as_dict() for k, w in self.judge.items()}, "skipped": self.skipped}


def build_scorecard(references: list[str], contexts: list[str], systems: dict[str, list[str]],
                    labels: dict[str, str] | None = None, comparisons: list[tuple[str, str]] | None = None,
                    finish_reasons: dict[str, list[str | None]] | None = None,
                    clip_scores: dict[str, np.ndarray] | None = None, judge: dict[str, WinRate] | None = None,
                    skipped: dict[str, str] | None = None, resamples: int = 1000, seed: int = 0,
                    idx: np.ndarray | None = None) -> Scorecard:
    """Score each system's captions (and the teacher's, `references`, where a metric applies to it) and compare
    the `comparisons` pairs (default: each system with the first, and with the teacher)."""
    n = len(references)
    for name, caps in systems.items():
        if len(caps) != n or len(contexts) != n:
            raise ValueError(f"{len(caps)} {name} captions and {len(contexts)} contexts for {n} references")
    names = list(systems)
    comparisons = comparisons or [*((s, names[0]) for s in names[1:]), *((s, TEACHER) for s in names)]
    idx = resample_indices(n, resamples, seed) if idx is None else idx
    scorer = ReferenceScorer(references)
    ctx = [Context(c) for c in contexts]
    everyone = {**systems, TEACHER: references}
    teacher_len = np.array([len(degeneracy.words(r)) for r in references], dtype=float)
    stats: dict[str, dict[str, Statistic]] = {}
    per_item: dict[str, dict[str, list]] = {}
    for name, caps in everyone.items():
        free = item_values(caps, ctx, (finish_reasons or {}).get(name))
        s = {"faithfulness": Statistic.ratio(free["supported"], free["asserted"]),
             "hallucination_rate": Statistic.mean(free["hallucinates"]),
             "context_use": Statistic.mean(free["supported"]), "length": Statistic.mean(free["length"]),
             "repetition": Statistic.mean(free["repetition"]), "empty_rate": Statistic.mean(free["empty"]),
             "truncated_rate": Statistic.mean(free["truncated"])}
        cols = {k: free[k].tolist() for k in ("asserted", "supported", "length", "repetition", "truncated")}
        if name != TEACHER:
            ref = scorer.per_item(caps)
            s.update({"bleu": scorer.corpus_bleu_statistic(ref["bleu_stats"]),
                      "sentence_bleu": Statistic.mean(ref["sentence_bleu"]), "rouge_l": Statistic.mean(ref["rouge_l"]),
                      "cider": Statistic.mean(ref["cider"]),
                      "length_ratio": Statistic.ratio(free["length"], teacher_len)})
            cols.update({k: ref[k].round(4).tolist() for k in ("sentence_bleu", "rouge_l", "cider")})
        if clip_scores and name in clip_scores:
            s["clip_score"] = Statistic.mean(clip_scores[name])
            cols["clip_score"] = np.round(clip_scores[name], 4).tolist()
        stats[name], per_item[name] = s, cols
    metrics: dict[str, dict] = {}
    for m in METRICS:
        have = {name: st[m.key] for name, st in stats.items() if m.key in st}
        if not have:
            continue
        scores = {name: interval(st, idx) for name, st in have.items()}
        pairs = {f"{a}_vs_{b}": paired(have[a], have[b], idx, m.better)
                 for a, b in comparisons if a in have and b in have}
        metrics[m.key] = {"scores": scores, "pairs": pairs}
    return Scorecard(n, {**{k: (labels or {}).get(k, k) for k in everyone}}, metrics, comparisons, resamples, seed,
                     scorer.bleu_signature, per_item, dict(judge or {}), dict(skipped or {}))


# -- presentation ------------------------------------------------------------------------------------------

def _fmt(m: MetricDef, x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}%" if m.scale == "share" else f"{x:.2f}"


def _cell(m: MetricDef, i: Interval | None) -> str:
    if i is None or math.isnan(i.value):
        return "–"
    return f"{_fmt(m, i.value)} [{_fmt(m, i.low)}, {_fmt(m, i.high)}]"


def _diff(m: MetricDef, p: Paired | None) -> str:
    if p is None or math.isnan(p.diff.value):
        return "–"
    sign = "+" if p.diff.value >= 0 else ""
    text = f"{sign}{_fmt(m, p.diff.value)} [{_fmt(m, p.diff.low)}, {_fmt(m, p.diff.high)}]"
    if p.p_value is not None:
        text += f" p={p.p_value:.3f}" + (" ✓" if p.significant else "")
    return text


def markdown_table(card: Scorecard, systems: tuple[str, ...] = ("base", "tuned", TEACHER),
                   pairs: tuple[tuple[str, str], ...] = (("tuned", "base"), ("tuned", TEACHER))) -> str:
    """The scorecard as a markdown table: each system's value [95% CI], and each pair's paired difference."""
    head = [f"{s} `{card.systems.get(s, s)}`" for s in systems]
    lines = [f"| metric (n={card.n}) | " + " | ".join(head) + " | "
             + " | ".join(f"{a} − {b} (paired)" for a, b in pairs) + " |",
             "|---|" + "---|" * (len(systems) + len(pairs))]
    for m in METRICS:
        if m.key not in card.metrics:
            continue
        arrow = {"higher": " ↑", "lower": " ↓", None: ""}[m.better]
        cells = [_cell(m, card.score(m.key, s)) for s in systems]
        diffs = [_diff(m, card.pair(m.key, a, b)) for a, b in pairs]
        lines.append(f"| {m.title}{arrow} | " + " | ".join(cells) + " | " + " | ".join(diffs) + " |")
    for opponent, w in card.judge.items():
        c = w.counts
        rate = _cell(MetricDef("", "", "higher", False, "share"), w.win_rate)
        p = f" p={w.p_value:.3f}" if w.p_value is not None else ""
        lines.append(f"| judge win-rate of tuned vs {opponent} ↑ | {rate}{p}{' ✓' if w.significant else ''} | "
                     f"wins {c['win']}, losses {c['loss']}, ties {c['tie']}, position-inconsistent "
                     f"{c['inconsistent']}, failed {c['failed']} |" + " |" * (len(systems) + len(pairs) - 2))
    notes = [f"95% bootstrap intervals over items ({card.resamples} resamples, seed {card.seed}); a difference is "
             "paired (same resamples), p is one-sided (the share of resamples where the first is not better), ✓ its "
             "interval excludes 0 the better way; ↑/↓: higher/lower is better.",
             f"sacrebleu: `{card.bleu_signature}`."]
    notes += [f"{k}: skipped ({why})." for k, why in card.skipped.items()]
    return "\n".join(lines) + "\n\n" + " ".join(notes)
