"""The ablation in the release: the card's section and, with the gate failed, its "Not recommended" notice under
the title; the preview's section (escaped)."""

from __future__ import annotations

import random

from viscon_dagster.core.ablation.report import MixScores, build_report, card_banner, card_section, preview_html
from viscon_dagster.core.exports.card import render_card
from viscon_dagster.core.exports.preview_html import render_preview
from viscon_dagster.core.exports.preview_records import PreviewCounts


def _report(leaky_rate: float, gate: bool = True) -> dict:
    rng = random.Random(3)
    ids = [f"i{k}" for k in range(60)]
    vectors = {"leaky": [rng.random() < leaky_rate for _ in ids], "none": [rng.random() < 0.3 for _ in ids]}
    scores = {m: MixScores(m, dict(zip(ids, v)), f"model/{m}", "tiny-ablation", "base@1", "b", "letter_logprob")
              for m, v in vectors.items()}
    report = build_report(scores, resamples=200, gate=gate)
    report["release"] = {"name": "viscon_100k_release", "version": "20261201T101500.123Z-1a2b3c4d"}
    return report


def _card(report: dict) -> str:
    return render_card({"leaky": {"train": 3, "test": 1}}, {"caption_model": ["m"]}, version="v1",
                       notes=card_section(report), banner=card_banner(report))


def test_a_failed_gate_marks_the_release_not_recommended_under_its_title():
    card = _card(_report(0.3))
    title, rest = card.split("# VisCon (reproduction)", 1)[1].split("## Configs", 1)
    assert "**Not recommended**" in title and "20261201T101500.123Z-1a2b3c4d" in title
    assert "## Ablation: which mix trains the better model" in rest
    assert rest.index("## Ablation") < rest.index("## Citation")
    assert "| 1 | `" in rest  # the accuracy table


def test_a_passed_gate_adds_the_section_only():
    report = _report(0.95)
    assert report["gate"]["recommended"] is True
    card = _card(report)
    assert "Not recommended" not in card and "## Ablation" in card and card_banner(report) == ""
    assert card_banner(_report(0.3, gate=False)) == ""  # gate off: no verdict on the card


def test_the_preview_section_is_escaped():
    report = _report(0.3)
    report["recipe"] = "<script>x</script>"
    html = render_preview([], PreviewCounts(records_per_mix={}, stages={}, missing={}), "t",
                          notes_html=preview_html(report))
    assert "<h2>ablation</h2>" in html and "NOT RECOMMENDED" in html
    assert "<script>x" not in html and "&lt;script&gt;" in html
