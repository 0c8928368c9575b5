"""The ablation's statistics and report on hand-built per-item results (no model)."""

from __future__ import annotations

import random

import pytest

from viscon_dagster.core.ablation.report import (
    MixScores,
    build_report,
    card_section,
    plot_png,
    report_markdown,
)
from viscon_dagster.core.ablation.stats import accuracy, holm, kendall_tau, mcnemar_exact


def test_mcnemar_exact_is_the_binomial_on_discordant_items():
    a = [True] * 10 + [False] * 5 + [True] * 20
    b = [False] * 10 + [False] * 5 + [True] * 20
    t = mcnemar_exact(a, b)
    assert (t.a_only, t.b_only) == (10, 0)
    assert t.p_value == pytest.approx(2 * 0.5 ** 10)  # two-sided exact
    assert mcnemar_exact(b, a).p_value == pytest.approx(t.p_value)
    assert mcnemar_exact(a, a).p_value == 1.0  # no discordant item: no evidence either way
    assert mcnemar_exact([True, False] * 20, [False, True] * 20).p_value == 1.0  # 20 vs 20
    with pytest.raises(ValueError, match="different items"):
        mcnemar_exact(a, b[:-1])


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_bootstrap_interval_brackets_the_accuracy_and_narrows_with_items():
    rng = random.Random(0)
    small = [rng.random() < 0.7 for _ in range(40)]
    large = [rng.random() < 0.7 for _ in range(2000)]
    s, big = accuracy(small), accuracy(large)
    assert s.low <= s.value <= s.high and big.low <= big.value <= big.high
    assert big.high - big.low < s.high - s.low
    se = (s.value * (1 - s.value) / s.n) ** 0.5  # the percentile interval is close to the normal one here
    assert s.high - s.low == pytest.approx(2 * 1.96 * se, abs=0.04)
    assert accuracy(small, seed=1) == accuracy(small, seed=1)  # seeded


def test_kendall_tau_against_the_paper_ranks():
    paper = {"leaky": 1, "separate": 2, "captions": 3, "none": 4}
    assert kendall_tau({"leaky": 0.9, "separate": 0.7, "captions": 0.5, "none": 0.3}, paper) == (1.0, 4)
    assert kendall_tau({"leaky": 0.1, "separate": 0.3, "captions": 0.5, "none": 0.7}, paper) == (-1.0, 4)
    assert kendall_tau({"leaky": 0.9}, paper) == (None, 1)


def _scores(vectors: dict[str, list[bool]], **same) -> dict[str, MixScores]:
    ids = [f"i{k}" for k in range(len(next(iter(vectors.values()))))]
    base = {"model": "m", "recipe": "tiny-ablation", "base_model": "base@1", "benchmark": "b1", "method": "lp"}
    return {m: MixScores(m, dict(zip(ids, v)), **{**base, "model": f"m/{m}", **same.get(m, {})})
            for m, v in vectors.items()}


def test_report_ranks_tests_and_gates():
    rng = random.Random(1)
    n = 80
    truth = {"leaky": [rng.random() < 0.9 for _ in range(n)], "captions": [rng.random() < 0.5 for _ in range(n)],
             "none": [rng.random() < 0.25 for _ in range(n)]}
    report = build_report(_scores(truth), resamples=500)
    assert report["ranking"] == ["leaky", "captions", "none"]
    pairs = {(c["a"], c["b"]): c for c in report["comparisons"]}
    assert set(pairs) == {("leaky", "captions"), ("leaky", "none"), ("captions", "none")}  # one family, no repeat
    assert all(c["p_holm"] >= c["p_value"] for c in pairs.values())
    assert pairs[("leaky", "none")]["significant"]
    assert report["gate"] == {"enabled": True, "leaky_beats_base": True, "recommended": True,
                              "reason": report["gate"]["reason"]}
    assert report["kendall_tau"] == 1.0
    md = report_markdown(report)
    assert md.count("| `") == 3 and "recommended" in md
    assert plot_png(report)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Not recommended" not in card_section(report)


def test_the_gate_fails_a_release_whose_leaky_mix_does_not_beat_the_base():
    rng = random.Random(2)
    same = [rng.random() < 0.4 for _ in range(60)]
    report = build_report(_scores({"leaky": same, "none": list(same)}), resamples=200)
    assert report["gate"]["leaky_beats_base"] is False and report["gate"]["recommended"] is False
    assert "Not recommended" in card_section(report)
    off = build_report(_scores({"leaky": same, "none": list(same)}), resamples=200, gate=False)
    assert off["gate"]["recommended"] is None and "Not recommended" not in card_section(off)
    no_base = build_report(_scores({"leaky": same, "captions": list(same)}), resamples=200)
    assert no_base["gate"]["leaky_beats_base"] is None


def test_mixes_scored_differently_are_refused():
    v = [True, False, True]
    with pytest.raises(ValueError, match="recipe differs"):
        build_report(_scores({"leaky": v, "none": v}, none={"recipe": "other"}))
    with pytest.raises(ValueError, match="benchmark differs"):
        build_report(_scores({"leaky": v, "none": v}, none={"benchmark": "b2"}))
    scores = _scores({"leaky": v, "none": v})
    scores["none"].correct = {"x": True, "y": False, "z": True}
    with pytest.raises(ValueError, match="other items"):
        build_report(scores)
    with pytest.raises(ValueError, match="at least two"):
        build_report(_scores({"leaky": v}))


def test_the_leaky_check_is_an_error_only_with_the_gate_on():
    import dagster as dg

    from viscon_dagster.checks.ablation_checks import check_leaky

    failed = {"enabled": True, "leaky_beats_base": False, "recommended": False, "reason": "r"}
    result = check_leaky(failed, dg.AssetKey("ablation_report"))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    result = check_leaky({**failed, "enabled": False, "recommended": None}, dg.AssetKey("ablation_report"))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert check_leaky({**failed, "leaky_beats_base": True}, dg.AssetKey("ablation_report")).passed


def test_the_tokens_budget_cycles_a_short_mix_and_stops_at_the_budget():
    from viscon_dagster.core.ablation.mixes import token_budget_order

    order, total = token_budget_order(["a", "b", "c"], [10, 20, 30], 75)
    assert order == ["a", "b", "c", "a", "b"] and total == 90  # 60 then the second pass until ≥ 75
    assert token_budget_order(["a", "b"], [50, 50], 40) == (["a"], 50)
    with pytest.raises(ValueError, match="tokens budget"):
        token_budget_order([], [], 10)
