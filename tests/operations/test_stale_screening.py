"""`viscon backfill --stale` screens partitions in bulk before asking Dagster (local/staleness.py): its answer must
be Dagster's own, partition for partition, whatever made them stale — a new code version, an input rewritten with
new data, an unpartitioned input rewritten — and the never-materialized ones are the missing ones."""

from __future__ import annotations

import runpy

import dagster as dg

from viscon_dagster.local.backfills import staleness
from viscon_dagster.local.staleness import screen
from viscon_dagster.local.workspace import file_workspace

SHARDS = [f"s{i}" for i in range(6)]
DEFS = '''
import dagster as dg

shards = dg.DynamicPartitionsDefinition(name="shards")
DATA = {{}}  # partition (or "u") -> data version of the next materialization


@dg.asset(code_version="1")
def u():
    return dg.MaterializeResult(data_version=dg.DataVersion(DATA.get("u", "u0")))


@dg.asset(partitions_def=shards, code_version="1")
def a(context):
    return dg.MaterializeResult(data_version=dg.DataVersion(DATA.get(context.partition_key, "0")))


@dg.asset(partitions_def=shards, code_version="{b_version}", deps=[a])
def b(context):
    return dg.MaterializeResult(data_version=dg.DataVersion("b-" + DATA.get(context.partition_key, "0")))


@dg.asset(partitions_def=shards, code_version="1", deps=[b, u])
def c(context):
    return dg.MaterializeResult(data_version=dg.DataVersion("c"))


defs = dg.Definitions(assets=[u, a, b, c])
'''


def load(tmp_path, name: str, b_version: str = "1"):
    path = tmp_path / f"{name}.py"
    path.write_text(DEFS.format(b_version=b_version))
    module = runpy.run_path(str(path))
    return module, file_workspace(path, tmp_path / name, location_name="screening"), module["defs"]


def both_ways(instance, workspace, defs) -> tuple[dict, dict, dict, dict]:
    keys = [dg.AssetKey(k) for k in "abc"]
    screened = staleness(instance, workspace, keys, defs.resolve_asset_graph())
    full = staleness(instance, workspace, keys)  # every partition asked of Dagster, as before
    return screened.stale, full.stale, screened.missing, full.missing


def test_screened_staleness_is_dagsters(tmp_path):
    (tmp_path / "w1").mkdir()
    (tmp_path / "w2").mkdir()
    module, workspace, defs = load(tmp_path, "w1")
    assets = [module[k] for k in "abc"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("shards", SHARDS)
        assert dg.materialize([module["u"]], instance=instance).success
        for p in SHARDS[:5]:  # s5 never materialized
            assert dg.materialize(assets, partition_key=p, instance=instance).success

        stale, full, missing, full_missing = both_ways(instance, workspace, defs)
        assert stale == full == {dg.AssetKey(k): [] for k in "abc"}
        assert missing == full_missing == {dg.AssetKey(k): ["s5"] for k in "abc"}
        graph = defs.resolve_asset_graph()
        assert all(screen(instance, graph, dg.AssetKey(k)).candidates == [] for k in "abc")  # nothing asked

        module["DATA"]["s1"] = "1"  # new data in a/s1: b/s1 is stale
        module["DATA"]["s2"] = "0"  # a/s2 rewritten with the same data: nothing is stale
        for p in ("s1", "s2"):
            assert dg.materialize([module["a"]], partition_key=p, instance=instance).success
        stale, full, *_ = both_ways(instance, workspace, defs)
        assert stale == full and stale[dg.AssetKey("b")] == ["s1"] and not stale[dg.AssetKey("c")]
        assert screen(instance, graph, dg.AssetKey("b")).candidates == ["s1", "s2"]  # Dagster decides these two

        module["DATA"]["u"] = "u1"  # the unpartitioned input has new data: every materialized c is stale
        assert dg.materialize([module["u"]], instance=instance).success
        stale, full, *_ = both_ways(instance, workspace, defs)
        assert stale == full and stale[dg.AssetKey("c")] == SHARDS[:5]

        _, workspace2, defs2 = load(tmp_path, "w2", b_version="2")  # b's code changed
        stale, full, *_ = both_ways(instance, workspace2, defs2)
        assert stale == full and stale[dg.AssetKey("b")] == SHARDS[:5] and stale[dg.AssetKey("a")] == []
