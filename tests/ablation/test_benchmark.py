"""Loading the benchmark: SEED-Bench's own layout (SEED-Bench.json + SEED-Bench-image/) from a local folder and from
S3 (a real S3 protocol server on loopback), its Hub parquet layout, and the chain's held-out MCQ."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image
from upath import UPath

from viscon_dagster.core.ablation.benchmark import (
    SEED_IMAGES,
    SEED_JSON,
    HoldOut,
    Item,
    Skipped,
    benchmark_fingerprint,
    chain_items,
    iter_seed_bench,
)
from viscon_dagster.core.exports.split import split_for

COLOURS = ["red", "green", "blue", "yellow"]


def jpeg(colour: str, size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "JPEG")
    return buf.getvalue()


def seed_questions() -> list[dict]:
    """SEED-Bench-1's record shape: image items (dimensions 1-9) and a video item (10) that must be skipped."""
    qs = [{"answer": "ABCD"[k % 4], "choice_a": "red", "choice_b": "green", "choice_c": "blue", "choice_d": "yellow",
           "data_id": f"1454426_{k}" if k % 2 else f"1454426_{k}.jpg",  # with and without the extension
           "data_type": "image", "question": "What is the main colour of the image?", "question_id": str(101669 + k),
           "question_type_id": 3} for k in range(6)]
    qs.append({"answer": "B", "choice_a": "throwing", "choice_b": "catching", "choice_c": "lifting",
               "choice_d": "poking", "data_id": "94328.webm", "data_type": "video", "question": "What happens?",
               "question_id": "v1738", "question_type_id": 10})
    qs.append({**qs[0], "question_id": "missing", "data_id": "no_such_image"})
    qs.append({**qs[0], "question_id": "bad", "answer": "E", "data_id": "1454426_0.jpg"})
    return qs


def write_seed_bench(folder: Path) -> Path:
    """A small copy of SEED-Bench in its release layout."""
    (folder / SEED_IMAGES).mkdir(parents=True)
    for k in range(6):
        (folder / SEED_IMAGES / f"1454426_{k}.jpg").write_bytes(jpeg(COLOURS[k % 4]))
    (folder / SEED_JSON).write_text(json.dumps({"questions": seed_questions(),
                                                "question_type": {"Instance Attributes": 3,
                                                                  "Action Recognition": 10}}))
    return folder


def _split(found) -> tuple[list[Item], dict[str, str]]:
    found = list(found)
    return [f for f in found if isinstance(f, Item)], {f.item_id: f.reason for f in found if isinstance(f, Skipped)}


def test_seed_bench_layout_from_a_local_folder(tmp_path):
    items, skipped = _split(iter_seed_bench(UPath(write_seed_bench(tmp_path / "seed")), cache_dir=str(tmp_path / "c")))
    assert [i.item_id for i in items] == [f"seed:{101669 + k}" for k in range(6)]
    assert skipped == {"seed:v1738": "not_an_image_item:video", "seed:missing": "image_missing",
                       "seed:bad": "bad_answer"}
    first = items[1]
    assert first.options == COLOURS and first.answer == "B" and first.dimension == "Instance Attributes"
    assert first.image == jpeg(COLOURS[1])
    row = first.row("benchmark_items/images/x")
    assert row["image_phash"] and len(row["question_hash"]) == 32 and row["shard"] is None
    limited, _ = _split(iter_seed_bench(UPath(tmp_path / "seed"), limit=2, cache_dir=str(tmp_path / "c")))
    assert len(limited) == 2
    other_dim, _ = _split(iter_seed_bench(UPath(tmp_path / "seed"), dimensions=[9], cache_dir=str(tmp_path / "c")))
    assert other_dim == []


def test_a_folder_in_neither_layout_is_refused_before_reading(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a SEED-Bench layout"):
        iter_seed_bench(UPath(tmp_path / "empty"))


def test_seed_bench_parquet_layout_as_on_the_hub(tmp_path):
    """lmms-lab/SEED-Bench's layout: parquet shards with the image embedded (a list of images)."""
    from datasets import Dataset, Features, List, Value
    from datasets import Image as HFImage

    rows = [q for q in seed_questions() if q["question_id"] not in ("missing", "bad")]
    features = Features({**{k: Value("string") for k in ("answer", "choice_a", "choice_b", "choice_c", "choice_d",
                                                          "data_id", "data_type", "question", "question_id")},
                         "question_type_id": Value("int64"), "image": List(HFImage())})
    data = {k: [r[k] for r in rows] for k in features if k != "image"}
    data["image"] = [[{"bytes": jpeg(COLOURS[k % 4]), "path": None}] if r["data_type"] == "image" else []
                     for k, r in enumerate(rows)]
    shard = tmp_path / "hub" / "data" / "test-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    Dataset.from_dict(data, features=features).to_parquet(str(shard))
    items, skipped = _split(iter_seed_bench(UPath(tmp_path / "hub"), cache_dir=str(tmp_path / "c")))
    assert len(items) == 6 and skipped == {"seed:v1738": "not_an_image_item:video"}
    assert [i.answer for i in items] == ["A", "B", "C", "D", "A", "B"]
    assert Image.open(io.BytesIO(items[2].image)).getpixel((10, 10))[2] > 200  # blue


def test_seed_bench_layout_on_s3(tmp_path, s3_bucket, s3_server):
    bucket, client = s3_bucket
    local = write_seed_bench(tmp_path / "seed")
    for f in local.rglob("*"):
        if f.is_file():
            client.put_object(Bucket=bucket, Key=f"bench/{f.relative_to(local).as_posix()}", Body=f.read_bytes())
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server,
                                                                         "region_name": "us-east-1"}}
    location = UPath(f"s3://{bucket}/bench", **options)
    items, skipped = _split(iter_seed_bench(location, storage_options=options, cache_dir=str(tmp_path / "c")))
    assert len(items) == 6 and len(skipped) == 3
    assert items[3].image == jpeg(COLOURS[3])


def test_chain_items_are_the_kept_mcq_of_held_out_pages(tmp_path):
    urls = [f"https://example.org/page/{k}" for k in range(40)]
    test_urls = [u for u in urls if split_for(u, 0.25, 0) == "test"]
    assert 0 < len(test_urls) < 40
    (tmp_path / "img.jpg").write_bytes(jpeg("red"))

    def qa(shard: str) -> tuple[str, pa.Table, pa.Table]:
        rows, caps = [], []
        for k, u in enumerate(urls):
            caps.append({"doc_id": f"d{k}", "position": 0, "image_path": "img.jpg"})
            rows.append({"doc_id": f"d{k}", "position": 0, "doc_url": u, "kind": "mcq", "item_index": 0,
                         "kept": True, "question": f"Q{k}?", "answer": "B",
                         "options": ["A. one", "B) two", "three", "four"]})
            rows.append({**rows[-1], "kind": "free_form", "options": None})  # not an MCQ
            rows.append({**rows[-2], "item_index": 1, "kept": False})  # a near-duplicate the dedup dropped
        return shard, pa.Table.from_pylist(rows), pa.Table.from_pylist(caps)

    read = lambda path: (tmp_path / path).read_bytes()  # noqa: E731
    items, skipped = _split(chain_items([qa("s0"), qa("s1")], HoldOut(0.25, 0, ("s1",)), read))
    assert skipped == {}
    s0 = [i for i in items if i.shard == "s0"]
    assert sorted(i.doc_url for i in s0) == sorted(test_urls)  # only the test pages of a training shard
    assert len([i for i in items if i.shard == "s1"]) == 40  # every page of the held-out shard
    assert items[0].options == ["one", "two", "three", "four"] and items[0].answer == "B"
    assert items[0].item_id.startswith("chain:s0:") and items[0].image_path == "img.jpg"
    assert HoldOut(0.25, 0, ("s1",)).reason("s1", urls[0]) == "holdout_shard"


def test_fingerprint_follows_items_and_answers():
    t = pa.table({"item_id": ["a", "b"], "answer": ["A", "B"]})
    assert benchmark_fingerprint(t) == benchmark_fingerprint(pa.table({"item_id": ["a", "b"], "answer": ["A", "B"]}))
    assert benchmark_fingerprint(t) != benchmark_fingerprint(pa.table({"item_id": ["a", "b"], "answer": ["A", "C"]}))
