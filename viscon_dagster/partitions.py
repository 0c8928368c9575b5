"""Partitions: one dynamic partition per source shard, identity-mapped down the chain."""

from __future__ import annotations

import dagster as dg

from viscon_dagster.core.shard_registry import register
from viscon_dagster.core.shard_sources import list_shards
from viscon_dagster.resources.storage import StorageResource

obelics_shards = dg.DynamicPartitionsDefinition(name="obelics_shards")


def record_shards(storage: StorageResource, source: str) -> list[str]:
    """List the source's shards and record their URLs in the registry; returns all their keys.

    Adding the keys to the instance is the caller's move (the CLI adds them directly; the sensor
    returns a request), so both paths share the listing and the registry.
    """
    refs = list_shards(source, storage.options_for(source))
    if not refs:
        raise ValueError(f"no *.parquet shards found under {source}")
    register(storage.root_path(), refs, source)
    return [r.key for r in refs]
