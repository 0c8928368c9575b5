"""Checks of the captioner: no page or image in both splits (blocking); the evaluation's gate policy passes
(blocking; core/captioner/gate.py) and, as a warning, the BLEU and ROUGE-L gains reach the paper's."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow as pa

from viscon_dagster.checks.gx_runner import run_suite
from viscon_dagster.core.captioner.gate import GateDecision
from viscon_dagster.core.captioner.metrics import PAPER_GAIN
from viscon_dagster.core.captioner.pairs import leaks
from viscon_dagster.core.captioner.scorecard import Scorecard

SPLIT_CHECK = "split_is_disjoint"
BEATS_BASE_CHECK = "tuned_beats_base"
PAPER_GAIN_CHECK = "gain_reaches_paper"


def split_check_spec(asset_key) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(SPLIT_CHECK, asset=asset_key, blocking=True,
                             description="no image sha256 and no page URL in both the train and the held-out split")


def check_split(pairs: pa.Table, asset_key) -> dg.AssetCheckResult:
    found = leaks(pairs)
    frame = pd.DataFrame({
        "image_in_both_splits": [v in set(found["image_sha256"]) for v in pairs.column("image_sha256").to_pylist()],
        "page_in_both_splits": [v in set(found["doc_url"]) for v in pairs.column("doc_url").to_pylist()],
    })

    def build(E):
        return [E.ExpectColumnValuesToBeInSet(column=c, value_set=[False]) for c in frame.columns]

    return run_suite(frame, "captioner_split", build, asset_key, SPLIT_CHECK)


def gate_check_specs(asset_key) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(BEATS_BASE_CHECK, asset=asset_key, blocking=True,
                          description="the gate policy over the scorecard (core/captioner/gate.py): by default the "
                                      "tuned captioner beats the untuned base on CIDEr-D and on the judge's "
                                      "win-rate, significantly, and is not less faithful to the page than the "
                                      "teacher by more than the margin"),
        dg.AssetCheckSpec(PAPER_GAIN_CHECK, asset=asset_key,
                          description=f"warns when the gain is below the paper's (+{PAPER_GAIN['bleu']:g} BLEU, "
                                      f"+{PAPER_GAIN['rouge_l']:g} ROUGE-L)"),
    ]


def check_gate(card: Scorecard, decision: GateDecision, asset_key) -> list[dg.AssetCheckResult]:
    gains = {}
    for key in ("bleu", "rouge_l", "cider"):
        p = card.pair(key, "tuned", "base")
        if p is not None:
            gains[f"{key}_gain"], gains[f"{key}_p_value"] = p.diff.value, p.p_value
    rules = {f"rule {r.name}": f"{'pass' if r.passed else 'FAIL'}: {r.detail}" for r in decision.rules}
    meets_paper = all(gains.get(f"{k}_gain", float("-inf")) >= v for k, v in PAPER_GAIN.items())
    return [
        dg.AssetCheckResult(check_name=BEATS_BASE_CHECK, asset_key=asset_key, passed=decision.passed,
                            severity=dg.AssetCheckSeverity.ERROR, metadata={**gains, **rules}),
        dg.AssetCheckResult(check_name=PAPER_GAIN_CHECK, asset_key=asset_key, passed=meets_paper,
                            severity=dg.AssetCheckSeverity.WARN,
                            metadata={**gains, "paper_bleu_gain": PAPER_GAIN["bleu"],
                                      "paper_rouge_l_gain": PAPER_GAIN["rouge_l"]}),
    ]
