import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from viscon_dagster.core.shards.registry import (
    ShardKeyConflict,
    lookup,
    refused_shards,
    register,
    register_source,
    registered_urls,
)
from viscon_dagster.core.shards.sources import (
    ShardReadError,
    ShardRef,
    check_shard,
    iter_record_batches,
    list_shards,
    shard_key,
)
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
    with pytest.raises(ShardReadError, match="other.parquet is not an OBELICS shard: missing columns"):
        iter_record_batches(str(path))


def bad_shards(folder: Path, good: Path) -> dict[str, Path]:
    """One file per way a shard can be unusable, next to the good shard's bytes."""
    data = good.read_bytes()
    files = {"text": b"texts,images\nnot,parquet\n", "truncated": data[: len(data) // 2], "empty": b""}
    paths = {}
    for name, content in files.items():
        paths[name] = folder / f"{name}.parquet"
        paths[name].write_bytes(content)
    paths["columns"] = folder / "columns.parquet"
    pq.write_table(pa.table({"text": ["x"]}), paths["columns"])
    paths["folder"] = folder / "folder.parquet"
    paths["folder"].mkdir()
    return paths


def test_footer_check_gives_each_bad_shard_its_reason(tmp_path, sample_dir):
    good = sample_dir / "shards" / "sample-00000.parquet"
    paths = bad_shards(tmp_path, good)
    assert check_shard(good.as_uri()) is None
    reasons = {name: check_shard(p.as_uri()) for name, p in paths.items()}
    assert "magic bytes not found" in reasons["text"]
    assert reasons["truncated"].startswith("not a readable parquet file: ArrowInvalid")
    assert "size is 0 bytes" in reasons["empty"]
    assert reasons["columns"] == ("not an OBELICS shard: missing columns "
                                  "['texts', 'images', 'metadata', 'general_metadata']")
    assert reasons["folder"].startswith("not a readable parquet file: IsADirectoryError")


@pytest.mark.parametrize("reader", ["pyarrow", "datasets"])
def test_a_bad_shard_fails_before_the_first_batch_is_asked_for_naming_its_url(tmp_path, sample_dir, reader):
    paths = bad_shards(tmp_path, sample_dir / "shards" / "sample-00000.parquet")
    for name in ("text", "truncated"):
        url = paths[name].as_uri()
        with pytest.raises(ShardReadError, match=f"cannot read shard {url}: .*ArrowInvalid"):
            iter_record_batches(url, reader=reader)  # no iteration: the shard is read on the call


def test_a_read_error_after_the_first_batch_names_the_url(tmp_path, sample_dir):
    """A file whose last row group is garbled reads its first batch, then fails: the error still names it."""
    path = tmp_path / "cut.parquet"
    pq.write_table(pq.read_table(sample_dir / "shards" / "sample-00000.parquet"), path, row_group_size=10)
    meta = pq.ParquetFile(path).metadata
    data = bytearray(path.read_bytes())
    first_chunk = meta.row_group(meta.num_row_groups - 1).column(0)
    last_start = min(first_chunk.data_page_offset, first_chunk.dictionary_page_offset or first_chunk.data_page_offset)
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    data[last_start:footer_start] = b"\xff" * (footer_start - last_start)
    path.write_bytes(bytes(data))
    batches = iter_record_batches(path.as_uri(), batch_size=10)
    assert next(batches).num_rows == 10
    with pytest.raises(ShardReadError, match=f"cannot read shard {path.as_uri()}"):
        list(batches)


def test_registration_refuses_bad_shards_with_their_reason_and_takes_them_once_fixed(tmp_path, sample_dir):
    source = tmp_path / "source"
    source.mkdir()
    good = sample_dir / "shards" / "sample-00000.parquet"
    shutil.copy(good, source / "good.parquet")
    bad = bad_shards(source, good)
    root = upath_for(str(tmp_path / "store"))
    registration = register_source(root, str(source))
    assert registration.keys == registration.new == ["good"]
    assert {r.key for r in registration.refused} == set(bad)
    assert refused_shards(root) == sorted(registration.refused, key=lambda r: r.key)
    record = json.loads((tmp_path / "store" / "_registry" / "bad_shards" / "truncated.json").read_text())
    assert record["url"] == bad["truncated"].as_uri() and "ArrowInvalid" in record["reason"]
    with pytest.raises(LookupError):
        lookup(root, "truncated")

    shutil.copy(good, bad["truncated"])  # fixed in place: checked again, registered, no longer refused
    again = register_source(root, str(source))
    assert again.keys == ["good", "truncated"] and again.new == ["truncated"]
    assert lookup(root, "truncated") == bad["truncated"].as_uri()
    assert "truncated" not in {r.key for r in refused_shards(root)}
    assert {r.key for r in again.refused} == set(bad) - {"truncated"}


def test_registry_round_trip_and_conflict(tmp_path):
    root = upath_for(str(tmp_path / "store"))
    assert register(root, [ShardRef("a", "file:///x/a.parquet")], "src") == ["a"]
    assert register(root, [ShardRef("a", "file:///x/a.parquet")], "src") == []
    assert lookup(root, "a") == "file:///x/a.parquet"
    with pytest.raises(ShardKeyConflict):
        register(root, [ShardRef("a", "file:///y/a.parquet")], "other")
    with pytest.raises(LookupError, match="viscon shards register"):
        lookup(root, "missing")


def test_the_index_answers_known_keys_and_the_entries_stay_the_record(tmp_path):
    root = upath_for(str(tmp_path / "store"))
    index = tmp_path / "store" / "_registry" / "shards.index.json"
    register(root, [ShardRef("a", "file:///x/a.parquet"), ShardRef("b", "file:///x/b.parquet")], "src")
    assert json.loads(index.read_text()) == {"a": "file:///x/a.parquet", "b": "file:///x/b.parquet"}

    # another registration overwrote the index at the same moment: b's entry is still the record
    index.write_text(json.dumps({"a": "file:///x/a.parquet"}))
    with pytest.raises(ShardKeyConflict, match="file:///x/b.parquet"):
        register(root, [ShardRef("b", "file:///y/b.parquet")], "other")
    assert register(root, [ShardRef("b", "file:///x/b.parquet")], "src") == []
    assert json.loads(index.read_text())["b"] == "file:///x/b.parquet"  # read from its entry and indexed again

    # an entry removed by hand is no longer registered, whatever the index says; the key can be registered anew
    (tmp_path / "store" / "_registry" / "shards" / "a.json").unlink()
    assert registered_urls(root) == {"b": "file:///x/b.parquet"}
    assert register(root, [ShardRef("a", "file:///z/a.parquet")], "src") == ["a"]
    assert lookup(root, "a") == "file:///z/a.parquet"


def test_a_local_source_whose_path_needs_quoting_registers(tmp_path, sample_dir):
    source = tmp_path / "my shards #1"
    source.mkdir()
    shutil.copy(sample_dir / "shards" / "sample-00000.parquet", source / "s0.parquet")
    registration = register_source(upath_for(str(tmp_path / "store")), str(source))
    assert registration.new == ["s0"] and not registration.refused
    url = lookup(upath_for(str(tmp_path / "store")), "s0")
    assert "%20" in url and check_shard(url) is None
    assert next(iter_record_batches(url)).num_rows > 0
