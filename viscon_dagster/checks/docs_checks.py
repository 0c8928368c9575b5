"""Data-quality suite for `filtered_docs` (blocking: later stages caption these documents)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from viscon_dagster.checks.gx_runner import run_suite

FILTERED_DOCS_CHECK = "filtered_docs_suite"


def filtered_docs_check_spec(asset_key: str = "filtered_docs") -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(FILTERED_DOCS_CHECK, asset=asset_key, blocking=True,
                             description="unique doc ids, token count within bound, ≥ min images, url not null")


def filtered_docs_expectations(max_text_tokens: int, min_images: int):
    def build(E):
        return [
            E.ExpectColumnValuesToNotBeNull(column="doc_id"),
            E.ExpectColumnValuesToBeUnique(column="doc_id"),
            E.ExpectColumnValuesToNotBeNull(column="url"),
            E.ExpectColumnValuesToBeBetween(column="text_tokens", min_value=1, max_value=max_text_tokens),
            E.ExpectColumnValuesToBeBetween(column="n_images", min_value=max(min_images, 1)),
        ]
    return build


def check_filtered_docs(df: pd.DataFrame, max_text_tokens: int, min_images: int,
                        asset_key: str = "filtered_docs") -> dg.AssetCheckResult:
    return run_suite(df[["doc_id", "url", "text_tokens", "n_images"]], "filtered_docs",
                     filtered_docs_expectations(max_text_tokens, min_images),
                     asset_key, FILTERED_DOCS_CHECK)
