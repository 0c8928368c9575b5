"""Caption scores against the teacher's held-out captions: sacrebleu BLEU and rouge-score ROUGE-L.

- corpus BLEU (sacrebleu, default 13a tokenisation; its signature is recorded), mean sentence BLEU
  (effective order), mean ROUGE-L F1 (rouge-score, stemming on), each with a 95% bootstrap interval;
- a paired bootstrap of tuned vs base on the same resampled items (the share of resamples where the
  tuned model does not win is the p-value), as sacrebleu's own paired test resamples BLEU statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PAPER_GAIN = {"bleu": 4.0, "rouge_l": 3.0}  # the paper: +4 BLEU, +3 ROUGE-L over the untuned model


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class SystemScores:
    bleu: Interval
    sentence_bleu: Interval
    rouge_l: Interval


@dataclass(frozen=True)
class Comparison:
    n: int
    base: SystemScores
    tuned: SystemScores
    gain: dict  # metric -> tuned - base
    p_value: dict  # metric -> paired bootstrap p-value of "tuned beats base"
    bleu_signature: str
    resamples: int
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)

    def beats_base(self) -> bool:
        return self.gain["bleu"] > 0 and self.gain["rouge_l"] > 0

    def meets_paper(self) -> bool:
        return all(self.gain[k] >= v for k, v in PAPER_GAIN.items())


class _Scorer:
    def __init__(self, references: list[str]):
        from rouge_score import rouge_scorer
        from sacrebleu.metrics import BLEU

        self.refs = references
        self.bleu = BLEU()
        self.sentence = BLEU(effective_order=True)
        self.rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    def per_item(self, hyps: list[str]) -> dict[str, np.ndarray]:
        # BLEU's sufficient statistics per sentence: corpus BLEU of any resample is a function of their sum
        stats = np.array(self.bleu._extract_corpus_statistics(hyps, [self.refs]), dtype=np.float64)
        sent = np.array([self.sentence.sentence_score(h, [r]).score for h, r in zip(hyps, self.refs)])
        rouge = np.array([100 * self.rouge.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, self.refs)])
        return {"stats": stats, "sentence_bleu": sent, "rouge_l": rouge}

    def corpus_bleu(self, stats: np.ndarray) -> float:
        return float(self.bleu._compute_score_from_stats(list(stats.sum(axis=0))).score)


def sentence_scores(hyps: list[str], refs: list[str]) -> dict[str, list[float]]:
    s = _Scorer(refs).per_item(hyps)
    return {"sentence_bleu": s["sentence_bleu"].round(4).tolist(), "rouge_l": s["rouge_l"].round(4).tolist()}


def compare(base: list[str], tuned: list[str], refs: list[str], resamples: int = 1000, seed: int = 0) -> Comparison:
    if not refs:
        raise ValueError("no held-out captions to score")
    if not len(base) == len(tuned) == len(refs):
        raise ValueError(f"{len(base)} base and {len(tuned)} tuned predictions for {len(refs)} references")
    scorer = _Scorer(refs)
    items = {"base": scorer.per_item(base), "tuned": scorer.per_item(tuned)}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(refs), size=(resamples, len(refs)))
    samples: dict[str, dict[str, np.ndarray]] = {}
    for name, it in items.items():
        samples[name] = {
            "bleu": np.array([scorer.corpus_bleu(it["stats"][i]) for i in idx]),
            "sentence_bleu": it["sentence_bleu"][idx].mean(axis=1),
            "rouge_l": it["rouge_l"][idx].mean(axis=1),
        }
    point = {name: {"bleu": scorer.corpus_bleu(it["stats"]), "sentence_bleu": float(it["sentence_bleu"].mean()),
                    "rouge_l": float(it["rouge_l"].mean())} for name, it in items.items()}

    def system(name: str) -> SystemScores:
        return SystemScores(**{m: Interval(round(point[name][m], 4), round(float(np.percentile(v, 2.5)), 4),
                                           round(float(np.percentile(v, 97.5)), 4))
                               for m, v in samples[name].items()})

    metrics = ("bleu", "sentence_bleu", "rouge_l")
    gain = {m: round(point["tuned"][m] - point["base"][m], 4) for m in metrics}
    p_value = {m: round(float(np.mean(samples["tuned"][m] - samples["base"][m] <= 0)), 4) for m in metrics}
    return Comparison(len(refs), system("base"), system("tuned"), gain, p_value,
                      str(scorer.bleu.get_signature()), resamples, seed)


def markdown_table(c: Comparison, base_label: str, tuned_label: str) -> str:
    rows = [("corpus BLEU", "bleu"), ("mean sentence BLEU", "sentence_bleu"), ("ROUGE-L F1", "rouge_l")]

    def cell(i: Interval) -> str:
        return f"{i.value:.2f} [{i.low:.2f}, {i.high:.2f}]"

    lines = [f"| metric (n={c.n}, 95% bootstrap CI) | base `{base_label}` | tuned `{tuned_label}` | gain | "
             f"p (paired bootstrap) |", "|---|---|---|---|---|"]
    for title, key in rows:
        lines.append(f"| {title} | {cell(getattr(c.base, key))} | {cell(getattr(c.tuned, key))} | "
                     f"{c.gain[key]:+.2f} | {c.p_value[key]:.3f} |")
    lines.append(f"\nsacrebleu: `{c.bleu_signature}`; paper's gain: +{PAPER_GAIN['bleu']:g} BLEU, "
                 f"+{PAPER_GAIN['rouge_l']:g} ROUGE-L; {c.resamples} resamples.")
    return "\n".join(lines)
