"""Run a great-expectations 1.x suite on a DataFrame and report it as a Dagster check result.

The pattern every asset follows: a module in `checks/` lists its expectations (a function of the
asset's settings), the asset declares an `AssetCheckSpec` and returns `run_suite(...)` with its
materialization. great-expectations is imported lazily: the import costs seconds, and only
materializations (not code-location loads) need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
import pandas as pd

# A suite is built from the gx.expectations module, so checks modules stay free of the import.
SuiteBuilder = Callable[[Any], list[Any]]


def _ephemeral_context():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep run logs readable
    return gx, ctx


def validate(df: pd.DataFrame, name: str, build: SuiteBuilder):
    """Validate `df` against the expectations `build(gx.expectations)` returns."""
    gx, ctx = _ephemeral_context()
    suite = gx.ExpectationSuite(name=name, expectations=build(gx.expectations))
    batch = (ctx.data_sources.add_pandas(f"{name}_source")
             .add_dataframe_asset(f"{name}_frame")
             .add_batch_definition_whole_dataframe(f"{name}_batch")
             .get_batch(batch_parameters={"dataframe": df}))
    return batch.validate(suite)


def result_summary(result) -> tuple[bool, dict[str, Any]]:
    """(passed, metadata): one line per expectation, failed ones with their unexpected counts."""
    lines, failed = [], 0
    for r in result.results:
        cfg = r.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
        status = "pass" if r.success else "FAIL"
        extra = ""
        if not r.success:
            failed += 1
            res = r.result or {}
            extra = f" (unexpected: {res.get('unexpected_count', res.get('observed_value'))}" \
                    f", e.g. {res.get('partial_unexpected_list', [])[:3]})"
        lines.append(f"- **{status}** `{cfg.type}` {kwargs}{extra}")
    return bool(result.success), {
        "expectations": len(result.results),
        "failed_expectations": failed,
        "report": dg.MetadataValue.md("\n".join(lines)),
    }


def run_suite(df: pd.DataFrame, name: str, build: SuiteBuilder, asset_key: str | dg.AssetKey,
              check_name: str, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
              ) -> dg.AssetCheckResult:
    passed, metadata = result_summary(validate(df, name, build))
    metadata["rows"] = len(df)
    return dg.AssetCheckResult(asset_key=dg.AssetKey(asset_key) if isinstance(asset_key, str) else asset_key,
                               check_name=check_name, passed=passed, severity=severity, metadata=metadata)
