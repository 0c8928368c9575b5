import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from viscon_dagster.core.shard_registry import ShardKeyConflict, lookup, register
from viscon_dagster.core.shard_sources import ShardRef, iter_record_batches, list_shards, shard_key
from viscon_dagster.resources.storage import upath_for


def test_local_folder_lists_parquet_shards_by_key(sample_dir):
    refs = list_shards(str(sample_dir / "shards"))
    assert [r.key for r in refs] == ["sample-00000", "sample-00001"]
    assert all(r.url.startswith("file://") for r in refs)


def test_shard_key_is_the_safe_file_stem():
    assert shard_key("hf://datasets/HuggingFaceM4/OBELICS/x/train-00000-of-01370-57c5.parquet") == \
        "train-00000-of-01370-57c5"
    assert shard_key("s3://b/p/odd name+1.parquet") == "odd-name-1"


def test_datasets_reader_yields_the_same_rows_as_pyarrow(sample_dir):
    """The Hub path reads through `datasets` streaming; here the same reader runs on local files."""
    url = list_shards(str(sample_dir / "shards"))[0].url
    via_arrow = pa.Table.from_batches(list(iter_record_batches(url, batch_size=10, reader="pyarrow")))
    batches = list(iter_record_batches(url, batch_size=10, reader="datasets"))
    assert max(b.num_rows for b in batches) <= 10
    assert pa.Table.from_batches(batches).to_pylist() == via_arrow.to_pylist()


def test_a_file_that_is_not_an_obelics_shard_is_a_clear_error(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"text": ["x"]}), path)
    with pytest.raises(ValueError, match="missing columns"):
        list(iter_record_batches(str(path)))


def test_registry_round_trip_and_conflict(tmp_path):
    root = upath_for(str(tmp_path / "store"))
    assert register(root, [ShardRef("a", "file:///x/a.parquet")], "src") == ["a"]
    assert register(root, [ShardRef("a", "file:///x/a.parquet")], "src") == []
    assert lookup(root, "a") == "file:///x/a.parquet"
    with pytest.raises(ShardKeyConflict):
        register(root, [ShardRef("a", "file:///y/a.parquet")], "other")
    with pytest.raises(KeyError, match="viscon shards register"):
        lookup(root, "missing")
