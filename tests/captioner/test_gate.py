"""The gate policy over a scorecard, the faithfulness rule on examples, and the evaluation's code version."""

from __future__ import annotations

import pytest

from viscon_dagster.core.captioner.faithfulness import assertions, context_of, faithfulness
from viscon_dagster.core.captioner.gate import GatePolicy, decide
from viscon_dagster.core.captioner.scorecard import build_scorecard

PAGE = ("Review: the Polaris desk lamp\n\nRahul Mehta tested the Polaris desk lamp in Lisbon for six weeks in "
        "March 2024. Battery life reached about eleven hours.")
REFS = [f"The Polaris desk lamp on a desk in Lisbon, photo {i}. Rahul Mehta tested it for six weeks."
        for i in range(40)]


def card(tuned: list[str], base: list[str] | None = None):
    base = base or ["zzz qqq"] * len(REFS)
    return build_scorecard(REFS, [PAGE] * len(REFS), {"base": base, "tuned": tuned}, resamples=300)


def test_the_default_gate_needs_a_significant_cider_gain_and_faithfulness_near_the_teachers():
    good = card(list(REFS))
    assert decide(good, GatePolicy()).passed
    # a gain that is not significant does not pass, unless significance is off
    one = card([REFS[0]] + ["zzz qqq"] * (len(REFS) - 1))
    assert one.pair("cider", "tuned", "base").diff.value > 0
    failed = decide(one, GatePolicy())
    assert not failed.passed and failed.failures()[0].startswith("gain:cider")
    assert decide(one, GatePolicy(significance=False)).passed
    # the same words with wrong names: CIDEr still gains, faithfulness fails the gate
    wrong = [r.replace("Lisbon", "Oslo").replace("Rahul Mehta", "Anna Berg") for r in REFS]
    decision = decide(card(wrong), GatePolicy())
    assert [r.name for r in decision.rules if not r.passed] == ["faithfulness"]
    assert decide(card(wrong), GatePolicy(faithfulness_margin=None)).passed
    with pytest.raises(ValueError, match="no metric meteor"):
        GatePolicy(gains=("meteor",))


def test_assertions_follow_the_documented_rule():
    found = {(a.kind, a.text) for a in assertions(
        "The Polaris desk lamp stood in Lake Bled. In Lisbon, Kenji Watanabe waited 11 days in May 2024: "
        '"How to make soup" was the title. Thousands came.')}
    assert found == {("name", "Polaris"), ("name", "Lake Bled"), ("name", "Lisbon"), ("name", "Kenji Watanabe"),
                     ("number", "11"), ("date", "May"), ("date", "2024")}
    f = faithfulness("Rahul Mehta tested it for eleven hours in Oslo in March.", PAGE)
    assert (f.asserted, f.supported, f.unsupported) == (4, 3, ("Oslo",)) and f.hallucinates
    prompt = ('The attached image\'s alt text is: "Photo from Cape Town".\n--- page ---\nA page <image_1: TARGET> '
              'about soup.\n--- end of page ---\nWrite one detailed paragraph.')
    assert context_of(prompt) == "Photo from Cape Town\nA page   about soup."


def test_the_judge_model_moves_only_the_evaluations_code_version():
    from viscon_dagster.definitions import build_definitions
    from viscon_dagster.resources.models import OpenAIHTTPBackend

    def versions(**kw):
        defs = build_definitions(**kw)
        return {k.to_user_string(): a.code_versions_by_key[k] for a in defs.assets for k in a.keys}

    before = versions()
    after = versions(judge_model=OpenAIHTTPBackend(model="gpt-4o", api_key="k"))
    assert sorted(k for k in before if before[k] != after[k]) == ["captioner_evaluation"]
