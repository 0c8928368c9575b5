"""A code location whose one partitioned asset fails on shard "b" (the backfill-failure report test)."""

import dagster as dg

shards = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=shards, backfill_policy=dg.BackfillPolicy.multi_run(1))
def fragile(context: dg.AssetExecutionContext) -> None:
    if context.partition_key == "b":
        raise ValueError("shard b is broken beyond repair")


defs = dg.Definitions(assets=[fragile], executor=dg.in_process_executor)
