import json
from pathlib import Path

import pyarrow.parquet as pq
from upath import UPath

from tests.exports.conftest import conversation_tables, shard_samples
from viscon_dagster.core.exports.release import export_conversations
from viscon_dagster.core.exports.split import plan_splits, split_for, split_score


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
    rows = sum(pq.read_metadata(Path(tmp_path / "out" / f)).num_rows for f in summary.files["idefics"]
               if f.endswith(".parquet"))
    assert rows == summary.records_in - 6 == 24 * 3 - 6


def _urls(n: int, split: str, fraction: float = 0.3) -> list[str]:
    """n page URLs the hash puts in `split`, nearest the threshold first."""
    found = [u for u in (f"https://example.org/p/{i}" for i in range(2000)) if split_for(u, fraction) == split]
    return sorted(found, key=lambda u: split_score(u) if split == "train" else -split_score(u))[:n]


def test_the_split_plan_moves_nothing_when_every_config_has_both_splits():
    train, test = _urls(4, "train"), _urls(2, "test")
    tables = [[(u, m) for u in train + test for m in ("leaky", "qa")]]
    plan = plan_splits(lambda: tables, 0.3)
    assert plan.moved == {} and plan.metadata() == {"pages_moved_to_train": 0, "pages_moved_to_test": 0}
    assert [plan.split(u) for u in train + test] == [split_for(u, 0.3) for u in train + test]


def test_the_split_plan_moves_the_page_nearest_the_threshold_for_every_config():
    train, test = _urls(4, "train"), _urls(2, "test")
    # mcq only on train pages: its page nearest the threshold (train[0]) moves to test, in every config; qa only
    # on test pages: its page nearest the threshold (test[0]) moves to train
    tables = [[(u, "leaky") for u in train + test] + [(u, "mcq") for u in train], [(test[0], "qa"), (test[1], "qa")]]
    reads = []
    plan = plan_splits(lambda: reads.append(1) or tables, 0.3)
    assert plan.moved == {train[0]: "test", test[0]: "train"} and len(reads) == 2
    assert plan.split(train[0]) == "test" and plan.split(train[1]) == "train" and plan.split(test[1]) == "test"
    assert plan.metadata() == {"pages_moved_to_train": 1, "pages_moved_to_test": 1}
    # a page is never moved when a config on it would lose its last record in the split it leaves
    lonely = [[(train[0], "captions"), (train[0], "mcq"), (train[1], "mcq")]]  # captions: a single page
    assert plan_splits(lambda: lonely, 0.3).moved == {train[1]: "test"}  # train[0] would leave captions empty
    assert plan_splits(lambda: [[(train[0], "captions")]], 0.3).moved == {}  # one page: one split


def test_the_split_plan_keeps_one_split_when_one_was_asked_for():
    urls = _urls(3, "train")
    assert plan_splits(lambda: [[(u, "leaky") for u in urls]], 0.0).moved == {}
    assert plan_splits(lambda: [[(u, "leaky") for u in urls]], 1.0).moved == {}
