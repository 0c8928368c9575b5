"""Partitions: one dynamic partition per source shard, identity-mapped down the chain."""

from __future__ import annotations

import dagster as dg

from viscon_dagster.core.captioner.recipes import RECIPES
from viscon_dagster.core.shards.registry import Registration, register_source
from viscon_dagster.resources.storage import StorageResource

obelics_shards = dg.DynamicPartitionsDefinition(name="obelics_shards")
# One partition per named training recipe (recipes live in code: core/captioner/recipes.py).
captioner_recipes = dg.StaticPartitionsDefinition(list(RECIPES))


def register_shards(storage: StorageResource, source: str) -> Registration:
    """Check the source's new shards and record the usable ones' URLs in the registry, the refused
    ones with their reason. `storage` must be resolved (EnvVars read), as Dagster hands it to a
    sensor or `dg.build_resources` returns it.

    Adding the keys to the instance is the caller's move (the CLI adds them directly; the sensor
    returns a request), so both paths share the listing, the checks and the registry.
    """
    return register_source(storage.root_path(), source, storage.options_for(source))


def record_shards(storage: StorageResource, source: str) -> list[str]:
    """`register_shards`, keeping only the registered keys (refused shards stay in the registry's record)."""
    return register_shards(storage, source).keys
