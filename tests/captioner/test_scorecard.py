"""Proof that the scorecard measures: five planted degradations of good captions of real sample pages, each
caught by the metrics meant to catch it (paired bootstrap, p < 0.05), and the proof fails when a metric is
replaced by a constant. Weight-free: no model runs here."""

from __future__ import annotations

import numpy as np
import pytest

from tests.captioner.planted import DEGRADATIONS, load_items
from viscon_dagster.core.captioner import faithfulness as faith_module
from viscon_dagster.core.captioner import metrics, scorecard
from viscon_dagster.core.captioner.faithfulness import Faithfulness
from viscon_dagster.core.captioner.scorecard import TEACHER, build_scorecard, markdown_table

# which metric is meant to catch which degradation (each must score the degraded set worse, paired p < 0.05)
CATCHES = {
    "shuffled": ["cider", "rouge_l", "faithfulness", "hallucination_rate"],
    "entities_swapped": ["faithfulness", "hallucination_rate"],
    "context_removed": ["context_use", "cider"],
    "truncated": ["truncated_rate", "cider"],
    "repeated_phrase": ["repetition", "cider"],
}
ALPHA = 0.05
RESAMPLES = 500


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample

    out = tmp_path_factory.mktemp("planted")
    write_sample(out, SampleSpec(shards=2, docs_per_shard=24, seed=7))
    found = load_items(out)
    assert len(found) >= 60 and len({i.doc for i in found}) >= 20  # enough pages for the paired test
    return found


def degradation_card(items):
    systems = {"clean": [i.clean for i in items], **{k: f(items) for k, f in DEGRADATIONS.items()}}
    return build_scorecard([i.teacher for i in items], [i.context for i in items], systems,
                           comparisons=[("clean", k) for k in DEGRADATIONS] + [("clean", TEACHER)],
                           resamples=RESAMPLES, seed=0)


def missed(card) -> list[str]:
    """Every (degradation, metric) of CATCHES where the metric does not score the degraded set significantly worse."""
    out = []
    for degradation, metric_keys in CATCHES.items():
        for key in metric_keys:
            p = card.pair(key, "clean", degradation)
            if p is None or not p.significant or p.p_value is None or p.p_value >= ALPHA:
                out.append(f"{degradation}: {key} ({p.as_dict() if p else 'not scored'})")
    return out


def test_each_planted_degradation_is_caught_by_the_metrics_meant_to_catch_it(items):
    card = degradation_card(items)
    assert missed(card) == []
    # the clean captions are as faithful to the page as the teacher's, and assert something on most pages
    assert card.score("faithfulness", "clean").value >= 0.95
    assert card.score("hallucination_rate", "clean").value == 0.0
    assert card.score("context_use", "clean").value >= 2
    # a metric meant for another failure stays quiet where it should: shuffling keeps length and repetition
    assert card.pair("length", "clean", "shuffled").diff.value == 0
    assert not card.pair("repetition", "clean", "shuffled").significant
    assert not card.pair("truncated_rate", "clean", "entities_swapped").significant
    table = markdown_table(card, systems=("clean", "entities_swapped", TEACHER),
                           pairs=(("clean", "entities_swapped"),))
    assert "context faithfulness" in table and "CIDEr-D" in table


@pytest.mark.parametrize("metric, patch", [
    ("cider", lambda mp: mp.setattr(metrics, "cider_d", lambda hyps, refs: np.ones(len(hyps)))),
    ("faithfulness", lambda mp: mp.setattr(scorecard, "faithfulness",
                                           lambda caption, context: Faithfulness(1, 1, ()))),
    ("repetition", lambda mp: mp.setattr(scorecard.degeneracy, "repetition", lambda caption: 0.1)),
    ("truncated_rate", lambda mp: mp.setattr(scorecard.degeneracy, "is_truncated", lambda caption, finish: False)),
    ("context_use", lambda mp: mp.setattr(faith_module.Context, "supports", lambda self, a: False)),
])
@pytest.mark.slow
def test_the_proof_fails_when_a_metric_is_a_constant(items, monkeypatch, metric, patch):
    patch(monkeypatch)
    failures = missed(degradation_card(items))
    assert any(f.split(": ")[1].startswith(f"{metric} ") for f in failures), failures
