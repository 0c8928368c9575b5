"""A small code location for the queue and pool tests: a shard-partitioned asset whose one step holds the `gpu`
pool for a few seconds, like a caption step. Loads in a second."""

import time

import dagster as dg

from viscon_dagster.gpu import GPU_POOL

shards = dg.StaticPartitionsDefinition(["a", "b", "c"])


@dg.asset(partitions_def=shards, pool=GPU_POOL, backfill_policy=dg.BackfillPolicy.multi_run(1))
def gpu_step(context: dg.AssetExecutionContext) -> None:
    context.log.info(f"holding the gpu for {context.partition_key}")
    time.sleep(4)


defs = dg.Definitions(assets=[gpu_step], executor=dg.in_process_executor)
