"""Both ways to add shard partitions: the `viscon shards register` command and the sensor."""

import dagster as dg
from dagster_aws.s3 import S3Resource

from viscon_dagster.automation import obelics_shard_sensor
from viscon_dagster.cli import main
from viscon_dagster.core.shards.registry import lookup, refused_shards
from viscon_dagster.definitions import defs
from viscon_dagster.resources.shard_source import ShardSourceResource
from viscon_dagster.resources.storage import StorageResource


def source_with_a_bad_shard(sample_dir, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for shard in (sample_dir / "shards").glob("*.parquet"):
        (source / shard.name).write_bytes(shard.read_bytes())
    (source / "notes.parquet").write_text("these are notes, not parquet\n")
    return source


def test_cli_register_adds_partitions_and_registry(sample_dir, capsys):
    assert main(["shards", "register", str(sample_dir / "shards")]) == 0
    assert main(["shards", "register", str(sample_dir / "shards")]) == 0  # idempotent
    out = capsys.readouterr().out
    assert "2 newly registered" in out and "0 newly registered" in out
    assert dg.DagsterInstance.get().get_dynamic_partitions("obelics_shards") == ["sample-00000", "sample-00001"]
    storage: StorageResource = defs.resources["storage"]
    assert lookup(storage.root_path(), "sample-00001").endswith("sample-00001.parquet")


def test_cli_refuses_a_bad_shard_names_it_and_exits_1(sample_dir, tmp_path, capsys):
    source = source_with_a_bad_shard(sample_dir, tmp_path)
    assert main(["shards", "register", str(source)]) == 1
    out = capsys.readouterr().out
    assert f"2 shards in {source}; 2 newly registered; 1 refused" in out
    assert (f"  refused notes ({(source / 'notes.parquet').as_uri()}): not a readable parquet file: ArrowInvalid: "
            "Parquet magic bytes not found") in out
    assert dg.DagsterInstance.get().get_dynamic_partitions("obelics_shards") == ["sample-00000", "sample-00001"]
    assert main(["shards", "list"]) == 0
    listed = capsys.readouterr()
    assert listed.out.split() == ["sample-00000", "sample-00001"]
    assert "refused notes (" in listed.err and "magic bytes" in listed.err


def test_sensor_only_registers_new_shards(sample_dir, tmp_path):
    storage = StorageResource(root=(tmp_path / "store").as_uri(), s3=defs.resources["storage"].s3)
    source = ShardSourceResource(url=str(sample_dir / "shards"))
    with dg.instance_for_test() as instance:
        resources = {"storage": storage, "shard_source": source}
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            result = obelics_shard_sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        assert not result.run_requests  # never launches work
        (request,) = result.dynamic_partitions_requests
        assert list(request.partition_keys) == ["sample-00000", "sample-00001"]
        instance.add_dynamic_partitions("obelics_shards", list(request.partition_keys))
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            again = obelics_shard_sensor(ctx)
        assert isinstance(again, dg.SkipReason)


def test_sensor_reports_refused_shards_and_requests_only_good_ones(sample_dir, tmp_path, capfd):
    source = source_with_a_bad_shard(sample_dir, tmp_path)
    storage = StorageResource(root=(tmp_path / "store").as_uri(), s3=defs.resources["storage"].s3)
    resources = {"storage": storage, "shard_source": ShardSourceResource(url=str(source))}
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            result = obelics_shard_sensor(ctx)
        (request,) = result.dynamic_partitions_requests
        assert list(request.partition_keys) == ["sample-00000", "sample-00001"]
        log = capfd.readouterr().err  # the tick's log
        assert "WARNING - refused shard notes (file://" in log and "magic bytes not found" in log
        instance.add_dynamic_partitions("obelics_shards", list(request.partition_keys))
        with dg.build_sensor_context(instance=instance, resources=resources) as ctx:
            again = obelics_shard_sensor(ctx)
    assert again.skip_message == f"no new shards under {source}; 1 refused (see the tick's log)"
    assert [r.key for r in refused_shards(storage.root_path())] == ["notes"]


def test_sensor_resolves_s3_credentials_from_the_environment(sample_dir, s3_server, s3_bucket, monkeypatch):
    """The sensor gets its resources from Dagster, EnvVars read: the credentials reach S3 (moto on loopback)."""
    bucket, client = s3_bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sensor-secret")
    for shard in sorted((sample_dir / "shards").glob("*.parquet")):
        client.upload_file(str(shard), bucket, f"obelics/{shard.name}")
    s3 = S3Resource(endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
                    aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"))
    resources = {"storage": StorageResource(root=f"s3://{bucket}/viscon", s3=s3),
                 "shard_source": ShardSourceResource(url=f"s3://{bucket}/obelics")}
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = obelics_shard_sensor(ctx)
    assert list(result.dynamic_partitions_requests[0].partition_keys) == ["sample-00000", "sample-00001"]
    names = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="viscon/")["Contents"]}
    assert names == {"viscon/_registry/shards/sample-00000.json", "viscon/_registry/shards/sample-00001.json",
                     "viscon/_registry/shards.index.json"}
