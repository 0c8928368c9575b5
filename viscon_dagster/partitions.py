"""Partitions: one dynamic partition per source shard, identity-mapped down the chain."""

from __future__ import annotations

import dagster as dg

from viscon_dagster.core.ablation.mixes import ABLATION_MIXES
from viscon_dagster.core.captioner.recipes import RECIPES
from viscon_dagster.core.shards.registry import SHARD_SETS

obelics_shards = dg.DynamicPartitionsDefinition(name="obelics_shards")
# VisCon-1M's own shards, disjoint from VisCon-100K's (core/shards/registry.py refuses a shard of the other set)
obelics_shards_1m = dg.DynamicPartitionsDefinition(name="obelics_shards_1m")
# shard set name (`viscon shards register --set`) -> its partitions
SHARD_PARTITIONS = {"100k": obelics_shards, "1m": obelics_shards_1m}
assert {k: v.name for k, v in SHARD_PARTITIONS.items()} == SHARD_SETS
# One partition per named training recipe (recipes live in code: core/captioner/recipes.py).
captioner_recipes = dg.StaticPartitionsDefinition(list(RECIPES))
# One partition per mix the ablation trains a target model on, and `none` (the base model untouched).
ablation_mixes = dg.StaticPartitionsDefinition(list(ABLATION_MIXES))
