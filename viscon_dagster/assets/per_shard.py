"""One step, one shard or a range of shards: the loop every per-shard asset runs.

A run may carry one partition or a range (`BackfillPolicy.multi_run(k)`). Each shard is computed on its own:
its inputs read from storage, its table published whole to `<root>/<asset key>/<shard>.parquet`, its metadata
attached to its own materialization and its check results recorded against its own partition. Inputs are read
shard by shard (not loaded for the whole range up front), so a run of a hundred shards holds one in memory.

A ranged run is all-or-nothing in Dagster: a shard that raises fails the run's shards (the model journal keeps
what was paid); a blocking check that fails on one shard holds the downstream steps of the run's range.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pyarrow as pa

from viscon_dagster.core.files.parquet import read_parquet, write_parquet
from viscon_dagster.resources.storage import StorageResource


@dataclass
class ShardOutput:
    table: pa.Table | None                      # published as the shard's file; None: nothing to write
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[dg.AssetCheckResult] = field(default_factory=list)


def config_defaults(config: type[dg.Config], *ignore: str) -> dict[str, Any]:
    """A config class's defaults, less the fields that do not change what the asset writes (for code versions)."""
    return {k: v for k, v in config().model_dump().items() if k not in ignore}


def read_input(storage: StorageResource, key: dg.AssetKey, shard: str) -> pa.Table:
    path = storage.partition_path(key, shard)
    if not path.exists():
        raise dg.Failure(f"{key.to_user_string()} has no output for shard {shard!r} ({path}): materialize it first")
    return read_parquet(path)


def materialize_shards(context: dg.AssetExecutionContext, storage: StorageResource,
                       compute: Callable[[str], ShardOutput]) -> dg.MaterializeResult:
    """Run `compute` for every shard of this step's partitions; one file, one metadata set and one result per
    check for each."""
    shards = list(context.partition_keys)
    checks: dict[str, list[dg.AssetCheckResult]] = {}
    for shard in shards:
        started = time.perf_counter()
        out = compute(shard)
        metadata = dict(out.metadata)
        if out.table is not None:
            path = storage.partition_path(context.asset_key, shard)
            write_parquet(out.table, path)
            metadata["path"] = dg.MetadataValue.path(str(path))
        metadata["seconds"] = round(time.perf_counter() - started, 3)
        context.add_asset_metadata(metadata, partition_key=shard)
        checks[shard] = out.checks
    if len(shards) == 1:
        return dg.MaterializeResult(check_results=checks[shards[0]])
    return dg.MaterializeResult(check_results=_per_shard_checks(context, checks))


def _per_shard_checks(context: dg.AssetExecutionContext,
                      checks: dict[str, list[dg.AssetCheckResult]]) -> list[dg.AssetCheckResult]:
    """A ranged run: each shard's evaluation is recorded with its partition; the step's own result per check
    (what Dagster's blocking acts on) passes only when every shard passed, naming those that did not."""
    specs = {s.name: s for s in context.assets_def.check_specs}
    by_name: dict[str, dict[str, dg.AssetCheckResult]] = {}
    for shard, results in checks.items():
        for r in results:
            spec = specs[r.check_name]
            context.log_event(dg.AssetCheckEvaluation(
                asset_key=spec.asset_key, check_name=spec.name, passed=r.passed, metadata=r.metadata,
                severity=r.severity, description=r.description, blocking=spec.blocking, partition=shard))
            by_name.setdefault(spec.name, {})[shard] = r
    summary = []
    for name, results in by_name.items():
        failed = sorted(s for s, r in results.items() if not r.passed)
        severities = {results[s].severity for s in failed}
        severity = dg.AssetCheckSeverity.ERROR if dg.AssetCheckSeverity.ERROR in severities or not failed \
            else dg.AssetCheckSeverity.WARN
        summary.append(dg.AssetCheckResult(
            asset_key=specs[name].asset_key, check_name=name, passed=not failed, severity=severity,
            metadata={"shards": len(results), "failed_shards": dg.MetadataValue.json(failed)},
            description=f"{len(results) - len(failed)} of {len(results)} shards passed (per-shard results "
                        f"are recorded with their partitions)"))
    return summary
