"""VisCon-1M's own shard set: `viscon shards register --set 1m`, disjoint from the 100K set."""

import json
import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

from viscon_dagster.cli import main
from viscon_dagster.core.shards.registry import lookup, refused_shards, register_source
from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample
from viscon_dagster.resources.storage import upath_for


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_two_sets")
    write_sample(out, SampleSpec(shards=2, docs_per_shard=4, seed=3, shards_1m=2, docs_per_shard_1m=3))
    return out


def _pages(path):
    metadata = pq.read_table(path, columns=["general_metadata"])["general_metadata"].to_pylist()
    return {json.loads(m).get("url") for m in metadata} - {None}  # one bad row per shard has no url


def _images(path):
    return {u for row in pq.read_table(path, columns=["images"])["images"].to_pylist() for u in row if u}


def test_the_sample_writes_a_disjoint_1m_shard_set(two_sets):
    hundred_k = sorted((two_sets / "shards").glob("*.parquet"))
    one_m = sorted((two_sets / "shards_1m").glob("*.parquet"))
    assert [p.name for p in hundred_k] == ["sample-00000.parquet", "sample-00001.parquet"]
    assert [p.name for p in one_m] == ["sample1m-00000.parquet", "sample1m-00001.parquet"]
    pages_100k = set().union(*map(_pages, hundred_k))
    pages_1m = set().union(*map(_pages, one_m))
    assert pages_100k and pages_1m and not pages_100k & pages_1m
    images_1m = set().union(*map(_images, one_m))
    assert images_1m and not set().union(*map(_images, hundred_k)) & images_1m
    assert all((two_sets / "images" / u.removeprefix("file:")).exists() for u in images_1m if "missing" not in u)


@pytest.mark.slow
def test_adding_the_1m_set_leaves_the_100k_shards_as_they_were(tmp_path):
    names = ("sample-00000.parquet", "sample-00001.parquet")
    write_sample(tmp_path, SampleSpec(shards=2, docs_per_shard=4, seed=3))
    assert not (tmp_path / "shards_1m").exists()
    before = [pq.read_table(tmp_path / "shards" / n) for n in names]
    write_sample(tmp_path, SampleSpec(shards=2, docs_per_shard=4, seed=3, shards_1m=1))
    assert [pq.read_table(tmp_path / "shards" / n) for n in names] == before
    assert (tmp_path / "shards_1m" / "sample1m-00000.parquet").exists()


def test_cli_registers_the_1m_set_and_lists_each_set(two_sets, capsys):
    assert main(["shards", "register", str(two_sets / "shards")]) == 0
    assert main(["shards", "register", "--set", "1m", str(two_sets / "shards_1m")]) == 0
    assert "2 newly registered (shard set 1m)" in capsys.readouterr().out
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("obelics_shards") == ["sample-00000", "sample-00001"]
    assert instance.get_dynamic_partitions("obelics_shards_1m") == ["sample1m-00000", "sample1m-00001"]
    assert main(["shards", "list", "--set", "1m"]) == 0
    assert capsys.readouterr().out.split() == ["sample1m-00000", "sample1m-00001"]
    assert main(["shards", "list"]) == 0
    assert capsys.readouterr().out.split() == ["sample-00000", "sample-00001"]


def test_a_100k_shard_is_refused_in_the_1m_set_with_the_reason(two_sets, tmp_path, capsys):
    assert main(["shards", "register", str(two_sets / "shards")]) == 0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(two_sets / "shards" / "sample-00000.parquet", mixed)  # same key, another URL
    shutil.copy(two_sets / "shards_1m" / "sample1m-00000.parquet", mixed)
    capsys.readouterr()
    assert main(["shards", "register", "--set", "1m", str(two_sets / "shards")]) == 1  # the very same files
    out = capsys.readouterr().out
    assert "0 newly registered; 2 refused (shard set 1m)" in out
    assert "refused sample-00000" in out and "already registered in the 100k shard set as 'sample-00000'" in out
    assert main(["shards", "register", "--set", "1m", str(mixed)]) == 1
    out = capsys.readouterr().out
    assert "1 newly registered; 1 refused" in out
    assert "the key 'sample-00000' is already a shard of the 100k shard set" in out
    instance = dg.DagsterInstance.get()
    assert instance.get_dynamic_partitions("obelics_shards_1m") == ["sample1m-00000"]
    assert main(["shards", "list", "--set", "1m"]) == 0
    listed = capsys.readouterr()
    assert listed.out.split() == ["sample1m-00000"]
    assert "refused sample-00000" in listed.err and "100k shard set" in listed.err


def test_the_other_way_round_and_lookup_across_sets(two_sets, tmp_path):
    root = upath_for(str(tmp_path / "store"))
    assert register_source(root, str(two_sets / "shards_1m"), shard_set="1m").new == ["sample1m-00000",
                                                                                       "sample1m-00001"]
    back = register_source(root, str(two_sets / "shards_1m"))  # into 100k: refused, recorded in the 100k set
    assert back.keys == [] and {r.key for r in back.refused} == {"sample1m-00000", "sample1m-00001"}
    assert all("already registered in the 1m shard set" in r.reason for r in back.refused)
    assert {r.key for r in refused_shards(root)} == {"sample1m-00000", "sample1m-00001"}
    assert refused_shards(root, "1m") == []
    url = (two_sets / "shards_1m" / "sample1m-00001.parquet").as_uri()
    assert lookup(root, "sample1m-00001") == lookup(root, "sample1m-00001", "1m") == url
    with pytest.raises(LookupError, match="viscon shards register SOURCE"):
        lookup(root, "sample1m-00001", "100k")
    with pytest.raises(LookupError, match="viscon shards register --set 1m SOURCE"):
        lookup(root, "nope", "1m")
    with pytest.raises(ValueError, match="unknown shard set '10m'"):
        register_source(root, str(two_sets / "shards_1m"), shard_set="10m")


def test_the_sensor_configured_for_the_1m_set_registers_there_and_refuses_100k_shards(two_sets, tmp_path):
    from viscon_dagster.automation import obelics_shard_sensor
    from viscon_dagster.definitions import defs
    from viscon_dagster.resources.shard_source import ShardSourceResource
    from viscon_dagster.resources.storage import StorageResource

    storage = StorageResource(root=(tmp_path / "store").as_uri(), s3=defs.resources["storage"].s3)
    register_source(storage.root_path(), str(two_sets / "shards"))  # the 100K set holds these
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(two_sets / "shards" / "sample-00001.parquet", mixed)
    shutil.copy(two_sets / "shards_1m" / "sample1m-00001.parquet", mixed)
    resources = {"storage": storage, "shard_source": ShardSourceResource(url=str(mixed), shard_set="1m")}
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance, resources=resources) as ctx:
        result = obelics_shard_sensor(ctx)
    (request,) = result.dynamic_partitions_requests
    assert request.partitions_def_name == "obelics_shards_1m" and list(request.partition_keys) == ["sample1m-00001"]
    assert [r.key for r in refused_shards(storage.root_path(), "1m")] == ["sample-00001"]
