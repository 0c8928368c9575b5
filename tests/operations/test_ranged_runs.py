"""A run over a range of shards writes one output, one metadata set and one result per check for each shard."""

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from viscon_dagster.assets.per_shard import ShardOutput, materialize_shards
from viscon_dagster.definitions import build_definitions
from viscon_dagster.environment import s3_resource
from viscon_dagster.partitions import obelics_shards
from viscon_dagster.resources.shard_source import record_shards
from viscon_dagster.resources.storage import StorageResource


def range_tags(first: str, last: str) -> dict[str, str]:
    return {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


@pytest.mark.slow
def test_filtered_docs_over_a_range(tmp_path, sample_dir, tokenizer_dir):
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir))
    keys = record_shards(defs.resources["storage"], str(sample_dir / "shards"))
    assert len(keys) == 2
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(obelics_shards.name, keys)
        job = defs.resolve_implicit_global_asset_job_def()
        result = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("filtered_docs")],
                                        tags=range_tags(keys[0], keys[-1]))
        assert result.success
        mats = {m.partition: m for m in result.asset_materializations_for_node("filtered_docs")}
        evaluations = result.get_asset_check_evaluations()
    assert sorted(mats) == keys
    for key in keys:
        md = {k: v.value for k, v in mats[key].metadata.items()}
        docs = pq.read_table(tmp_path / "store" / "filtered_docs" / f"{key}.parquet")
        assert md["dagster/row_count"] == md["rows_out"] == docs.num_rows and key in md["source_url"]
        assert (tmp_path / "store" / "filtered_docs_rejects" / f"{key}.parquet").exists()
    assert mats[keys[0]].metadata["source_url"] != mats[keys[1]].metadata["source_url"]
    per_shard = sorted((e.partition, e.passed) for e in evaluations if e.partition)
    assert per_shard == [(k, True) for k in keys]
    summary = [e for e in evaluations if e.partition is None]
    assert len(summary) == 1 and summary[0].passed and summary[0].metadata["shards"].value == 2


PARTS = dg.StaticPartitionsDefinition(["s1", "s2", "s3"])
CHECK = dg.AssetCheckSpec("rows_positive", asset="toy", blocking=True)


@dg.asset(partitions_def=PARTS, check_specs=[CHECK], backfill_policy=dg.BackfillPolicy.multi_run(3))
def toy(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    import pyarrow as pa

    def one(shard: str) -> ShardOutput:
        rows = 0 if shard == "s2" else 3
        table = pa.table({"x": list(range(rows))})
        return ShardOutput(table, {"rows": rows}, [dg.AssetCheckResult(check_name=CHECK.name, passed=rows > 0)])

    return materialize_shards(context, storage, one)


@dg.asset(partitions_def=PARTS, deps=[toy])
def after_toy() -> None:
    pass


@pytest.mark.slow
def test_a_failing_shard_is_named_and_holds_the_ranges_downstream(tmp_path):
    storage = StorageResource(root=str(tmp_path), s3=s3_resource())
    defs = dg.Definitions(assets=[toy, after_toy], resources={"storage": storage})
    with dg.instance_for_test() as instance:
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance, tags=range_tags("s1", "s3"), raise_on_error=False)
        evaluations = result.get_asset_check_evaluations()
        assert {m.partition: m.metadata["rows"].value for m in result.asset_materializations_for_node("toy")} == {
            "s1": 3, "s2": 0, "s3": 3}
        assert not instance.get_materialized_partitions(dg.AssetKey("after_toy"))  # blocked by the failed check
    assert sorted((e.partition, e.passed) for e in evaluations if e.partition) == [
        ("s1", True), ("s2", False), ("s3", True)]
    summary = next(e for e in evaluations if e.partition is None)
    assert not summary.passed and summary.metadata["failed_shards"].value == ["s2"]
    assert [f.name for f in sorted((tmp_path / "toy").iterdir())] == ["s1.parquet", "s2.parquet", "s3.parquet"]
