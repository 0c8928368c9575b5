"""What `submit_backfill` asks Dagster for is what was planned: each asset's shards (one list of names when every
partitioned asset has the same shards, ranges otherwise) and the unpartitioned release."""

from __future__ import annotations

import dagster as dg

from viscon_dagster.definitions import defs
from viscon_dagster.local.backfills import submit_backfill
from viscon_dagster.local.workspace import PROJECT

SHARDS = [f"shard-{i:03d}" for i in range(8)]


def targets(instance: dg.DagsterInstance, backfill_id: str) -> dict[dg.AssetKey, set[str] | None]:
    data = instance.get_backfill(backfill_id).asset_backfill_data
    subset = data.target_subset
    out: dict[dg.AssetKey, set[str] | None] = {k: None for k in subset.non_partitioned_asset_keys}
    for key, parts in subset.partitions_subsets_by_asset_key.items():
        out[key] = set(parts.get_partition_keys())
    return out


def test_the_backfill_targets_exactly_the_planned_shards():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("obelics_shards", SHARDS)
        graph = defs.resolve_asset_graph()
        fd, images, captions = dg.AssetKey("filtered_docs"), dg.AssetKey("images"), dg.AssetKey("captions")
        release = dg.AssetKey("viscon_100k_release")
        assert graph.has(release)
        some = SHARDS[1::3]  # not contiguous
        same = submit_backfill(instance, PROJECT, {fd: some, images: some, captions: some, release: None})
        assert targets(instance, same) == {fd: set(some), images: set(some), captions: set(some), release: None}
        mixed = submit_backfill(instance, PROJECT, {fd: some, images: SHARDS[:2]})
        assert targets(instance, mixed) == {fd: set(some), images: set(SHARDS[:2])}
        alone = submit_backfill(instance, PROJECT, {images: [SHARDS[5]]})
        assert targets(instance, alone) == {images: {SHARDS[5]}}
        # the same list for two partitionings (a shard named like a recipe): one list of names would lose the
        # captioner's (Dagster keeps one root partitioning), so the backfill goes as ranges
        instance.add_dynamic_partitions("obelics_shards", ["tiny-demo"])
        captioner = dg.AssetKey("contextual_captioner")
        two = submit_backfill(instance, PROJECT, {fd: ["tiny-demo"], captioner: ["tiny-demo"]})
        assert targets(instance, two) == {fd: {"tiny-demo"}, captioner: {"tiny-demo"}}
        evaluation = dg.AssetKey("captioner_evaluation")  # the demo's training step: one recipe, two assets
        trained = submit_backfill(instance, PROJECT, {captioner: ["tiny-demo"], evaluation: ["tiny-demo"]})
        assert targets(instance, trained) == {captioner: {"tiny-demo"}, evaluation: {"tiny-demo"}}
