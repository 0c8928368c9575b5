import json
from pathlib import Path

import pyarrow.parquet as pq
from upath import UPath

from tests.exports.conftest import conversation_tables, shard_samples
from viscon_dagster.core.exports.release import export_conversations
from viscon_dagster.core.exports.split import split_for


def test_split_for_is_seeded_stable_and_close_to_the_fraction():
    urls = [f"https://site{i % 37}.org/p/{i}" for i in range(4000)]
    first = [split_for(u, 0.05, seed=1) for u in urls]
    assert first == [split_for(u, 0.05, seed=1) for u in urls]
    assert 0.035 < first.count("test") / len(urls) < 0.065
    assert first != [split_for(u, 0.05, seed=2) for u in urls]
    assert {split_for(u, 0.0) for u in urls} == {"train"} and {split_for(u, 1.0) for u in urls} == {"test"}


def test_rerun_with_shards_in_another_order_gives_the_same_splits(tmp_path, storage_root, tables):
    def ids_per_split(out):
        folder = Path(out.path) / "llava" / "qa"
        return {s: sorted(r["id"] for r in json.loads((folder / f"{s}.json").read_text())) for s in ("train", "test")}

    a = export_conversations(tables, storage_root, UPath(tmp_path / "a"), formats=("llava",), test_fraction=0.3)
    b = export_conversations(list(reversed(tables)), storage_root, UPath(tmp_path / "b"), formats=("llava",),
                             test_fraction=0.3, chunk_rows=7)
    assert a.counts == b.counts
    assert ids_per_split(UPath(tmp_path / "a")) == ids_per_split(UPath(tmp_path / "b"))


def test_rerun_replaces_old_shards(tmp_path, storage_root, tables):
    out = UPath(tmp_path / "out")
    export_conversations(tables, storage_root, out, formats=["hf"], max_shard_bytes=8_000)
    many = sorted(p.name for p in (Path(out.path) / "hf" / "data" / "leaky").iterdir())
    summary = export_conversations(tables, storage_root, out, formats=["hf"], mixes=["leaky"],
                                   test_fraction=0.3)
    few = sorted(p.name for p in (Path(out.path) / "hf" / "data" / "leaky").iterdir())
    assert len(many) > 2 and few == ["test-00000-of-00001.parquet", "train-00000-of-00001.parquet"]
    assert sorted(p.name for p in (Path(out.path) / "hf" / "data").iterdir()) == ["leaky"]
    assert summary.files["hf"] == ["hf/README.md"] + [f"hf/data/leaky/{n}" for n in few]
    assert summary.bytes["hf"] == sum(p.stat().st_size for p in (Path(out.path) / "hf").rglob("*") if p.is_file())


def test_missing_images_drop_their_records_and_are_counted(tmp_path):
    from tests.chain.conversation_samples import write_images

    shards = shard_samples()
    root = UPath(tmp_path / "storage")
    present = [s for shard in shards for s in shard][2:]  # the first two samples' images never arrived
    write_images(root, present)
    summary = export_conversations(conversation_tables(shards), root, UPath(tmp_path / "out"),
                                   formats=["idefics"], mixes=["leaky", "separate"])
    assert summary.missing_images == 2
    assert summary.records_missing_image == 2 * 3  # per sample: one leaky, two separate
    rows = sum(pq.read_metadata(Path(tmp_path / "out" / f)).num_rows for f in summary.files["idefics"])
    assert rows == summary.records_in - 6 == 24 * 3 - 6
