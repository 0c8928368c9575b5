"""Data-quality suites for `images`: a blocking integrity suite and a warning-level success rate."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from viscon_dagster.checks.gx_runner import run_suite
from viscon_dagster.core.images.statuses import OK, STATUS_REGEX

IMAGES_SUITE = "images_suite"
IMAGES_SUCCESS_RATE = "images_success_rate"


def image_check_specs(asset_key: str = "images") -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(IMAGES_SUITE, asset=asset_key, blocking=True,
                          description="sha256 unique among kept images, dimensions within bounds, known statuses"),
        dg.AssetCheckSpec(IMAGES_SUCCESS_RATE, asset=asset_key,
                          description="share of image requests that yielded an image (warning below threshold)"),
    ]


def images_expectations(min_side: int, max_side: int):
    def build(E):
        return [
            E.ExpectColumnValuesToMatchRegex(column="status", regex=STATUS_REGEX),
            E.ExpectColumnValuesToBeUnique(column="kept_sha256"),
            E.ExpectColumnValuesToBeBetween(column="kept_short_side", min_value=min_side),
            E.ExpectColumnValuesToBeBetween(column="kept_long_side", max_value=max_side),
            E.ExpectColumnValuesToNotBeNull(column="kept_path_or_absent"),
        ]
    return build


def check_images(df: pd.DataFrame, min_side: int, max_side: int, asset_key: str = "images") -> dg.AssetCheckResult:
    kept = df["status"] == OK
    frame = pd.DataFrame({
        "status": df["status"],
        # kept rows only; others are null, which GX's column expectations skip
        "kept_sha256": df["sha256"].where(kept),
        "kept_short_side": df[["width", "height"]].min(axis=1).where(kept),
        "kept_long_side": df[["width", "height"]].max(axis=1).where(kept),
        "kept_path_or_absent": df["path"].where(kept, "absent"),
    })
    return run_suite(frame, "images", images_expectations(min_side, max_side), asset_key, IMAGES_SUITE)


def check_success_rate(success_rate: float, threshold: float, status_counts: dict,
                       asset_key: dg.AssetKey | str = "images") -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=dg.AssetKey.from_coercible(asset_key), check_name=IMAGES_SUCCESS_RATE,
        passed=success_rate >= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"success_rate": round(success_rate, 4), "threshold": threshold,
                  "status_counts": dg.MetadataValue.json(status_counts)})
