import io
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from tests.exports.conftest import MAX_SHARD_BYTES, TEST_FRACTION
from viscon_dagster.core.chain.conversations import MIXES
from viscon_dagster.core.exports.columns import RELEASE_LINEAGE
from viscon_dagster.core.exports.parquet import estimate_row_bytes
from viscon_dagster.core.exports.split import split_for


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from viscon_dagster.demo.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"))["vlm"]


def test_idefics_messages_render_through_the_idefics3_processor(exported, tiny_vlm):
    from transformers import AutoProcessor

    from viscon_dagster.demo.tiny_models import IMAGE_SEQ_LEN

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    out, summary = exported
    files = sorted((Path(out.path) / "idefics" / "leaky").glob("train-*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    assert len(rows) == summary.counts["idefics"]["leaky"]["train"]
    for row in rows[:6]:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * (len(row["messages"]) // 2)
        text = processor.apply_chat_template(row["messages"], tokenize=False)
        images = [Image.open(io.BytesIO(im["bytes"])).convert("RGB") for im in row["images"]]
        assert text.count("<image>") == len(images) == 1
        batch = processor(text=[text], images=[images], return_tensors="pt")
        assert int((batch["input_ids"] == image_id).sum()) == IMAGE_SEQ_LEN * len(images)
        assert batch["pixel_values"].shape[1] == len(images)
        assert row["images"][0]["path"].startswith("images/") and row["doc_url"]


def test_hf_export_loads_with_datasets_per_split(exported, tmp_path):
    from datasets import load_dataset

    out, summary = exported
    data = Path(out.path) / "hf" / "data"
    for mix in ("leaky", "separate", "noncontextual"):
        files = {s: sorted(str(p) for p in (data / mix).glob(f"{s}-*.parquet")) for s in ("train", "test")}
        for split, n in summary.counts["hf"][mix].items():
            ds = load_dataset("parquet", data_files=files, split=split, cache_dir=str(tmp_path / "cache"))
            assert ds.num_rows == n > 0
            first = ds[0]
            assert first["image"].size == (96, 72)  # decoded to PIL through the embedded feature type
            assert first["conversations"][0]["value"].startswith("<image>\n")
            assert set(RELEASE_LINEAGE) <= set(ds.column_names) and "image_sha256" not in ds.column_names


def test_hf_folder_loads_by_config_through_its_card(exported, tmp_path):
    from datasets import load_dataset

    out, summary = exported
    for mix in ("leaky", "mcq"):
        ds = load_dataset(str(Path(out.path) / "hf"), mix, cache_dir=str(tmp_path / "cache"))
        assert {s: ds[s].num_rows for s in ds} == summary.counts["hf"][mix]


def test_shards_are_size_bounded_and_named_n_of_m(exported):
    out, summary = exported
    folder = Path(out.path) / "hf" / "data" / "separate"
    names = sorted(p.name for p in folder.glob("train-*.parquet"))
    assert len(names) > 1
    assert names == [f"train-{i:05d}-of-{len(names):05d}.parquet" for i in range(len(names))]
    assert not list(folder.glob("_tmp-*"))
    assert sum(pq.read_metadata(folder / n).num_rows for n in names) == summary.counts["hf"]["separate"]["train"]
    sizes = [[estimate_row_bytes(r, r["image"]["bytes"]) for r in pq.read_table(folder / n).to_pylist()]
             for n in names]
    for shard, following in zip(sizes, sizes[1:] + [None]):
        assert sum(shard) <= MAX_SHARD_BYTES or len(shard) == 1
        if following:  # packed: the next shard's first row would not have fitted
            assert sum(shard) + following[0] > MAX_SHARD_BYTES


def test_split_is_by_page_url_in_every_format(exported):
    out, _ = exported
    seen: dict[str, set[str]] = {}
    for fmt in ("idefics", "hf"):
        for path in (Path(out.path) / fmt).rglob("*.parquet"):
            split = path.name.split("-")[0]
            for url in pq.read_table(path, columns=["doc_url"]).column("doc_url").to_pylist():
                seen.setdefault(url, set()).add(split)
                assert split == split_for(url, TEST_FRACTION)
    assert len(seen) == 12 and all(len(s) == 1 for s in seen.values())
    assert {next(iter(s)) for s in seen.values()} == {"train", "test"}


def test_card_front_matter_counts_models_and_licence(exported):
    out, summary = exported
    card = (Path(out.path) / "hf" / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "cc-by-4.0"
    configs = {c["config_name"]: c for c in front["configs"]}
    assert set(configs) == set(MIXES) and configs["leaky"].get("default") is True
    assert [f["split"] for f in configs["qa"]["data_files"]] == ["train", "test"]
    body = card.split("---", 2)[2]
    n = summary.counts["hf"]["separate"]
    assert f"| `separate` | {n['train']} | {n['test']} | {n['train'] + n['test']} |" in body
    assert "`teacher-vlm`" in body and "`qa-llm`" in body and "`caption-v1`" in body and "`qa-v1`" in body
    assert "| free_form | 48 | 0.05 | 0.05 |" in body  # leakage 0.0 and 0.1 per sample: mean/median 0.05
    assert "2502.10250" in body and "OBELICS" in body and "CC-BY-4.0" in body
