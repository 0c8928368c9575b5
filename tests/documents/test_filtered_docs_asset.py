"""filtered_docs materialized through Dagster: on local storage and on S3 (moto on loopback)."""

from collections import Counter

import dagster as dg
import pyarrow.parquet as pq
import pytest
import s3fs
from dagster_aws.s3 import S3Resource

from tests.conftest import materialize_partition
from viscon_dagster.core.shards.registry import register
from viscon_dagster.core.shards.sources import list_shards
from viscon_dagster.definitions import build_definitions
from viscon_dagster.demo.sample_corpus import BAD_ROW_KINDS
from viscon_dagster.resources.shard_source import record_shards


def materialize(defs, key, instance, raise_on_error=True):
    return materialize_partition(defs, ["filtered_docs"], key, instance, raise_on_error=raise_on_error)


@pytest.mark.slow
def test_local_materialization_writes_docs_rejects_and_metadata(tmp_path, sample_dir, tokenizer_dir):
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir))
    keys = record_shards(defs.resources["storage"], str(sample_dir / "shards"))
    with dg.instance_for_test() as instance:
        result = materialize(defs, keys[0], instance)
        assert result.success
        mat = result.asset_materializations_for_node("filtered_docs")[0]
        md = {k: v.value for k, v in mat.metadata.items()}
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["filtered_docs_suite"] is True
    assert md["rows_in"] == md["rows_out"] + md["rows_rejected"] + md["rows_not_sampled"]
    assert md["rows_rejected"] == len(BAD_ROW_KINDS)
    assert {k.split("/", 1)[1]: v for k, v in md.items() if k.startswith("rejects/") and v} == \
        dict(Counter(BAD_ROW_KINDS.values()))
    assert "| doc_id |" in md["preview"] and md["dagster/row_count"] == md["rows_out"]
    docs = pq.read_table(tmp_path / "store" / "filtered_docs" / f"{keys[0]}.parquet")
    assert docs.num_rows == md["rows_out"] and len(docs.column("doc_id").unique()) == docs.num_rows
    rejects = pq.read_table(tmp_path / "store" / "filtered_docs_rejects" / f"{keys[0]}.parquet")
    assert sorted(rejects.column("reject_reason").to_pylist()) == sorted(BAD_ROW_KINDS.values())


@pytest.mark.slow
def test_s3_end_to_end_with_moto_server(s3_server, s3_bucket, sample_dir, tokenizer_dir):
    bucket, client = s3_bucket
    for ref in list_shards(str(sample_dir / "shards")):
        client.upload_file(ref.url.removeprefix("file://"), bucket, f"obelics/{ref.key}.parquet")
    defs = build_definitions(storage_root=f"s3://{bucket}/viscon",
                             s3=S3Resource(endpoint_url=s3_server, region_name="us-east-1",
                                           aws_access_key_id="testing", aws_secret_access_key="testing"),
                             tokenizer=str(tokenizer_dir))
    keys = record_shards(defs.resources["storage"], f"s3://{bucket}/obelics")
    assert keys == ["sample-00000", "sample-00001"]
    with dg.instance_for_test() as instance:
        assert materialize(defs, keys[1], instance).success
    listed = client.list_objects_v2(Bucket=bucket, Prefix="viscon/")["Contents"]
    names = {o["Key"] for o in listed}
    assert {"viscon/filtered_docs/sample-00001.parquet", "viscon/filtered_docs_rejects/sample-00001.parquet",
            "viscon/_registry/shards/sample-00001.json"} <= names
    fs = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": s3_server})
    with fs.open(f"{bucket}/viscon/filtered_docs/sample-00001.parquet", "rb") as f:
        docs = pq.read_table(f)
    assert docs.num_rows > 20 and set(docs.column("shard").to_pylist()) == {"sample-00001"}


@pytest.mark.slow
def test_unregistered_shard_fails_with_a_clear_message(tmp_path, tokenizer_dir):
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir))
    with dg.instance_for_test() as instance:
        result = materialize(defs, "nowhere", instance, raise_on_error=False)
    assert not result.success
    assert "viscon shards register" in str(result.get_step_failure_events()[0].step_failure_data.error)


@pytest.mark.slow
def test_missing_tokenizer_fails_with_a_clear_message(tmp_path, sample_dir):
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tmp_path / "no-such-tok"))
    register(defs.resources["storage"].root_path(), list_shards(str(sample_dir / "shards")), "src")
    with dg.instance_for_test() as instance:
        result = materialize(defs, "sample-00000", instance, raise_on_error=False)
    assert not result.success
    assert "viscon models tiny" in str(result.get_step_failure_events()[0].step_failure_data.error)


@pytest.mark.slow
def test_a_shard_gone_bad_fails_naming_its_file_and_leaves_the_last_outputs(tmp_path, sample_dir, tokenizer_dir):
    """Registered while good, then overwritten with garbage: the rerun fails naming the file, before any output
    is opened, so the previous run's docs and rejects stay as they were (whichever reader streams the shard)."""
    source = tmp_path / "source"
    source.mkdir()
    shard = source / "sample-00000.parquet"
    shard.write_bytes((sample_dir / "shards" / "sample-00000.parquet").read_bytes())
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir))
    (key,) = record_shards(defs.resources["storage"], str(source))
    outputs = [tmp_path / "store" / "filtered_docs" / f"{key}.parquet",
               tmp_path / "store" / "filtered_docs_rejects" / f"{key}.parquet"]
    with dg.instance_for_test() as instance:
        assert materialize(defs, key, instance).success
        before = [p.read_bytes() for p in outputs]
        shard.write_text("this shard was overwritten by a text file\n")
        for reader in ("pyarrow", "datasets"):
            result = materialize_partition(defs, ["filtered_docs"], key, instance, raise_on_error=False,
                                           run_config={"ops": {"filtered_docs": {"config": {"reader": reader}}}})
            assert not result.success
            error = str(result.get_step_failure_events()[0].step_failure_data.error)
            assert f"cannot read shard {shard.as_uri()}: ArrowInvalid: Parquet magic bytes not found" in error
    assert [p.read_bytes() for p in outputs] == before
