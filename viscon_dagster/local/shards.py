"""Shard registration on the local instance: the source's usable shards become partitions of their set (the same
listing, checks and registry the shard sensor uses: resources/shard_source.py)."""

from __future__ import annotations

from collections.abc import Callable

from viscon_dagster.core.shards.registry import DEFAULT_SET, Registration
from viscon_dagster.local.instance import local_instance, resolved_storage


def register_source_shards(source: str, shard_set: str = DEFAULT_SET,
                           report: Callable[[str], None] = print) -> Registration:
    """Register the source's usable shards as partitions of `shard_set`; report what was added and refused."""
    from viscon_dagster.partitions import SHARD_PARTITIONS
    from viscon_dagster.resources.shard_source import register_shards

    partitions = SHARD_PARTITIONS[shard_set]
    with resolved_storage() as storage:
        registration = register_shards(storage, source, shard_set)
    instance = local_instance()
    known = set(instance.get_dynamic_partitions(partitions.name))
    new = [k for k in registration.keys if k not in known]
    instance.add_dynamic_partitions(partitions.name, new)
    refused = f"; {len(registration.refused)} refused" if registration.refused else ""
    report(f"{len(registration.keys)} shards in {source}; {len(new)} newly registered{refused}"
           + (f" (shard set {shard_set})" if shard_set != DEFAULT_SET else ""))
    for bad in registration.refused:
        report(f"  refused {bad.key} ({bad.url}): {bad.reason}")
    return registration
