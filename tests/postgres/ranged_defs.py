"""A code location for the queue test: a shard-partitioned asset whose backfill runs hold ranges of shards
(BackfillPolicy.multi_run), each run taking a few seconds. Loads in a second."""

import time

import dagster as dg

shards = dg.StaticPartitionsDefinition(["a", "b", "c"])


@dg.asset(partitions_def=shards, backfill_policy=dg.BackfillPolicy.multi_run(10))
def ranged_step(context: dg.AssetExecutionContext) -> None:
    context.log.info(f"working on {context.partition_keys}")
    time.sleep(6)


defs = dg.Definitions(assets=[ranged_step], executor=dg.in_process_executor)
