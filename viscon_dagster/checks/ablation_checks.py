"""Checks of the ablation: no benchmark item in any training mix (blocking: a contaminated mix would score what
it memorised); leaky beats the base (an error when the report's gate is on, a warning otherwise)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from viscon_dagster.checks.gx_runner import run_suite
from viscon_dagster.core.ablation.decontam import Match

CLEAN_CHECK = "no_benchmark_item_in_training"
LEAKY_CHECK = "leaky_beats_base"


def clean_check_spec(asset_key) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(CLEAN_CHECK, asset=asset_key, blocking=True,
                             description="the published mixes, read back, hold no record whose image (sha256 or "
                                         "pHash within the default distance) or question (normalised text) is a "
                                         "benchmark item's, whatever the decontamination settings were")


def check_clean(record_ids: list[str], matches: list[tuple[str, Match]], asset_key) -> dg.AssetCheckResult:
    matched = {rid: m for rid, m in matches}
    frame = pd.DataFrame({"id": record_ids, "matches_benchmark": [rid in matched for rid in record_ids]})

    def build(E):
        return [E.ExpectColumnValuesToBeInSet(column="matches_benchmark", value_set=[False])]

    result = run_suite(frame, "ablation_decontamination", build, asset_key, CLEAN_CHECK)
    examples = [f"{rid}: {m.reason} of {m.item_id}" + (f" ({m.detail})" if m.detail else "")
                for rid, m in list(matched.items())[:5]]
    return dg.AssetCheckResult(asset_key=result.asset_key, check_name=CLEAN_CHECK, passed=result.passed,
                               severity=result.severity,
                               metadata={**result.metadata, "still_matching": len(matched),
                                         "examples": dg.MetadataValue.json(examples)})


def leaky_check_spec(asset_key) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(LEAKY_CHECK, asset=asset_key,
                             description="the leaky mix's accuracy is above the base model's and McNemar's test "
                                         "(Holm-corrected) is below alpha; an error when the gate is on")


def check_leaky(gate: dict, asset_key) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if gate["enabled"] else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(asset_key=asset_key, check_name=LEAKY_CHECK, passed=bool(gate["leaky_beats_base"]),
                               severity=severity, metadata={"reason": gate["reason"], "gate": gate["enabled"],
                                                            "recommended": str(gate["recommended"])})
