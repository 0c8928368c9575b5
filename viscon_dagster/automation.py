"""Sensors and schedules. The shard sensor only registers partitions; it never launches heavy work."""

import dagster as dg

from viscon_dagster.partitions import obelics_shards, register_shards
from viscon_dagster.resources.shard_source import ShardSourceResource
from viscon_dagster.resources.storage import StorageResource


@dg.sensor(minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Registers new source shards as obelics_shards partitions (no runs launched).")
def obelics_shard_sensor(context: dg.SensorEvaluationContext, storage: StorageResource,
                         shard_source: ShardSourceResource) -> dg.SensorResult | dg.SkipReason:
    source = shard_source.resolved
    registration = register_shards(storage, source)
    for bad in registration.refused:
        context.log.warning(f"refused shard {bad.key} ({bad.url}): {bad.reason}")
    known = set(context.instance.get_dynamic_partitions(obelics_shards.name))
    new = [k for k in registration.keys if k not in known]
    if not new:
        refused = f"; {len(registration.refused)} refused (see the tick's log)" if registration.refused else ""
        return dg.SkipReason(f"no new shards under {source}{refused}")
    return dg.SensorResult(dynamic_partitions_requests=[obelics_shards.build_add_request(new)])
