"""Reference metrics against the teacher's held-out captions: sacrebleu BLEU, rouge-score ROUGE-L and
pycocoevalcap's CIDEr-D, as per-item values the scorecard resamples (core/captioner/bootstrap.py).

- corpus BLEU (sacrebleu, default 13a tokenisation; its signature is recorded): per-sentence sufficient
  statistics, so corpus BLEU of any resample is a function of their sum; mean sentence BLEU (effective
  order);
- ROUGE-L F1 (rouge-score, stemming on);
- CIDEr-D (pycocoevalcap's `Cider`, the COCO evaluation's implementation: tf-idf n-grams 1–4, clipped counts,
  a Gaussian length penalty with σ = 6, ×10). Its idf comes from the held-out references, so each caption's
  score is fixed once the reference set is, and a resample averages them. COCO tokenises with the Stanford
  PTB tokenizer, a Java program; here captions are lower-cased and split into runs of letters and digits
  (punctuation dropped), which is what PTB tokenisation plus COCO's punctuation removal amounts to for
  plain English captions.
"""

from __future__ import annotations

import re

import numpy as np

from viscon_dagster.core.captioner.bootstrap import Statistic

PAPER_GAIN = {"bleu": 4.0, "rouge_l": 3.0}  # the paper: +4 BLEU, +3 ROUGE-L over the untuned model
CIDER_TOKENS = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def cider_tokens(text: str) -> str:
    return " ".join(CIDER_TOKENS.findall(text.lower()))


def cider_d(hyps: list[str], refs: list[str]) -> np.ndarray:
    """CIDEr-D of each hypothesis against its one reference (idf over all references)."""
    from pycocoevalcap.cider.cider import Cider

    ids = [str(i) for i in range(len(refs))]
    gts = {i: [cider_tokens(r)] for i, r in zip(ids, refs)}
    res = {i: [cider_tokens(h)] for i, h in zip(ids, hyps)}
    _, scores = Cider().compute_score(gts, res)
    return np.asarray(scores, dtype=np.float64)


class ReferenceScorer:
    """The reference metrics of hypotheses against one fixed set of references."""

    def __init__(self, references: list[str]):
        from rouge_score import rouge_scorer
        from sacrebleu.metrics import BLEU

        if not references:
            raise ValueError("no held-out captions to score")
        self.refs = references
        self.bleu = BLEU()
        self.sentence = BLEU(effective_order=True)
        self.rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

    @property
    def bleu_signature(self) -> str:
        return str(self.bleu.get_signature())

    def per_item(self, hyps: list[str]) -> dict[str, np.ndarray]:
        if len(hyps) != len(self.refs):
            raise ValueError(f"{len(hyps)} predictions for {len(self.refs)} references")
        stats = np.array(self.bleu._extract_corpus_statistics(hyps, [self.refs]), dtype=np.float64)
        sent = np.array([self.sentence.sentence_score(h, [r]).score for h, r in zip(hyps, self.refs)])
        rouge = np.array([100 * self.rouge.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, self.refs)])
        return {"bleu_stats": stats, "sentence_bleu": sent, "rouge_l": rouge, "cider": cider_d(hyps, self.refs)}

    def corpus_bleu_statistic(self, stats: np.ndarray) -> Statistic:
        def score(s: np.ndarray) -> float:
            return float(self.bleu._compute_score_from_stats(list(s)).score)

        return Statistic(lambda: score(stats.sum(axis=0)),
                         lambda idx: np.array([score(stats[row].sum(axis=0)) for row in idx]))

