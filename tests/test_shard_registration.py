"""Both ways to add shard partitions: the `viscon shards register` command and the sensor."""

import dagster as dg

from viscon_dagster.automation import ShardSourceResource, obelics_shard_sensor
from viscon_dagster.cli import main
from viscon_dagster.core.shard_registry import lookup
from viscon_dagster.definitions import defs
from viscon_dagster.resources.storage import StorageResource


def test_cli_register_adds_partitions_and_registry(sample_dir, capsys):
    assert main(["shards", "register", str(sample_dir / "shards")]) == 0
    assert main(["shards", "register", str(sample_dir / "shards")]) == 0  # idempotent
    out = capsys.readouterr().out
    assert "2 newly registered" in out and "0 newly registered" in out
    assert dg.DagsterInstance.get().get_dynamic_partitions("obelics_shards") == ["sample-00000", "sample-00001"]
    storage: StorageResource = defs.resources["storage"]
    assert lookup(storage.root_path(), "sample-00001").endswith("sample-00001.parquet")


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
