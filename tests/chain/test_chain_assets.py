"""The chain through Dagster: tiny real models end to end; scripted bad outputs end as recorded rejects."""

import io
from collections import Counter

import dagster as dg
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from PIL import Image
from transformers import AutoProcessor
from upath import UPath

from tests.chain.scripted_openai import ScriptedOpenAI
from tests.conftest import materialize_partition
from tests.exports.llava_validator import validate_llava_file
from viscon_dagster.core.chain.prompts import NONCONTEXTUAL
from viscon_dagster.core.exports.versions import current_release_path
from viscon_dagster.core.models.labels import model_label
from viscon_dagster.definitions import RELEASE_JOB, SHARD_JOB, build_definitions
from viscon_dagster.demo.tiny_models import build_tiny_models
from viscon_dagster.environment import image_fetcher
from viscon_dagster.resources.models import OpenAIHTTPBackend, TransformersLocalBackend
from viscon_dagster.resources.shard_source import record_shards

SHORT = {"ops": {"captions": {"config": {"max_tokens": 24, "temperature": 1.0}},
                 "qa_pairs": {"config": {"max_tokens": 512, "temperature": 1.0}}}}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


def run_shard(defs, key, instance, run_config=None):
    instance.add_dynamic_partitions("obelics_shards", [key])
    return defs.resolve_job_def(SHARD_JOB).execute_in_process(partition_key=key, instance=instance,
                                                              run_config=run_config or {})


def table(store, asset, key):
    return pq.read_table(store / asset / f"{key}.parquet")


@pytest.mark.slow
def test_whole_chain_with_tiny_models_and_release(tmp_path, sample_dir, tokenizer_dir, tiny_models):
    store = tmp_path / "store"
    defs = build_definitions(
        storage_root=store.as_uri(), tokenizer=str(tokenizer_dir),
        fetcher=image_fetcher(allowed_file_roots=[str(sample_dir / "images")]),
        caption_model=TransformersLocalBackend(model=str(tiny_models["vlm"]), batch_size=16),
        qa_model=TransformersLocalBackend(model=str(tiny_models["lm"]), json_max_string_length=24, batch_size=16))
    key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[1]
    with dg.instance_for_test() as instance:
        result = run_shard(defs, key, instance, SHORT)
        assert result.success
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        pushed = tmp_path / "published"
        release = defs.resolve_job_def(RELEASE_JOB).execute_in_process(
            instance=instance, run_config={"ops": {"viscon_100k_release": {"config": {"push_to": pushed.as_uri()}}}})
        assert release.success
    assert checks == {"filtered_docs_suite": True, "images_suite": True, "images_success_rate": True,
                      "captions_suite": True, "qa_pairs_suite": True, "conversations_suite": True}
    images = table(store, "images", key)
    captions = table(store, "captions", key)
    assert captions.num_rows == Counter(images.column("status").to_pylist())["ok"]
    # a local checkpoint is named by its folder and a digest of its files, never by this machine's path
    (label,) = set(captions.column("caption_model").to_pylist())
    assert label == model_label(str(tiny_models["vlm"])) and label.startswith("tiny-idefics3@") and "/" not in label
    qa = table(store, "qa_pairs", key)
    assert qa.num_rows >= captions.num_rows  # at least one row (an item or a failure) per caption
    conversations = table(store, "conversations", key)
    assert {"leaky", "captions", "separate"} <= set(conversations.column("mix").to_pylist())

    current = current_release_path(UPath(store), "viscon_100k_release")  # versions/<version>/, named by CURRENT
    hf = current / "hf"
    assert (hf / "README.md").exists()
    for published in (hf / "README.md", current / "preview.html"):
        assert str(tiny_models["vlm"].parent) not in published.read_text(), published
    leaky = load_dataset("parquet", data_files=str(hf / "data" / "leaky" / "*.parquet"), split="train")
    assert leaky.num_rows == Counter(conversations.column("mix").to_pylist())["leaky"]
    llava = current / "llava"
    for split_file in (llava / "leaky").glob("*.json"):
        assert validate_llava_file(split_file, llava) == []
    processor = AutoProcessor.from_pretrained(tiny_models["vlm"])
    idefics = [r for f in sorted((current / "idefics" / "leaky").glob("*.parquet"))
               for r in pq.read_table(f).to_pylist()]
    assert len(idefics) == leaky.num_rows  # train and test files together, as for the HF export
    for row in idefics[:3]:
        text = processor.apply_chat_template(row["messages"], tokenize=False)
        images = [Image.open(io.BytesIO(im["bytes"])).convert("RGB") for im in row["images"]]
        batch = processor(text=[text], images=[images], return_tensors="pt")
        assert text.count("<image>") == len(images) == 1 and batch["pixel_values"].shape[1] == 1
    # the push target gets the HF folder's layout (a Hub repo in production: hf://datasets/org/name)
    assert (pushed / "README.md").read_text() == (hf / "README.md").read_text()
    assert sorted(p.name for p in (pushed / "data" / "leaky").iterdir()) == \
        sorted(p.name for p in (hf / "data" / "leaky").iterdir())


@pytest.mark.slow
def test_bad_model_output_ends_as_recorded_rejects(tmp_path, sample_dir, tokenizer_dir):
    server = ScriptedOpenAI()
    base_url = server.start()
    try:
        store = tmp_path / "store"
        defs = build_definitions(
            storage_root=store.as_uri(), tokenizer=str(tokenizer_dir),
            fetcher=image_fetcher(allowed_file_roots=[str(sample_dir / "images")]),
            caption_model=OpenAIHTTPBackend(model="scripted-vlm", base_url=base_url, api_key="test-key",
                                            max_attempts=1),
            qa_model=OpenAIHTTPBackend(model="scripted-llm", base_url=base_url, api_key="test-key", max_attempts=1))
        key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
        with dg.instance_for_test() as instance:
            assert run_shard(defs, key, instance).success
            asked = server.requests
            assert run_shard(defs, key, instance).success  # a rerun pays for nothing
            assert server.requests == asked
            before_control = table(store, "conversations", key)
            control = materialize_partition(defs, ["noncontextual_captions", "conversations"], key, instance)
            assert control.success
    finally:
        server.stop()

    caption_status = Counter(table(store, "captions", key).column("status").to_pylist())
    assert caption_status["ok"] > 0 and caption_status["empty"] > 0 and caption_status["refused"] > 0
    qa = table(store, "qa_pairs", key)
    reasons = Counter(r for r in qa.column("reason").to_pylist() if r)
    # invalid JSON and an answer letter outside A-D fail the schema even after the repair retry:
    # unparsable; duplicate options pass the schema and are caught by our validation
    assert {"unparsable", "duplicate_options"} <= set(reasons)
    assert qa.num_rows > 0 and Counter(qa.column("valid").to_pylist())[True] > 0
    unique = table(store, "unique_qa_pairs", key)
    removed = [r for r in unique.to_pylist() if not r["kept"]]
    assert removed and all(r["duplicate_of"] and r["similarity"] >= 0.9 for r in removed)
    conversations = table(store, "conversations", key)
    assert conversations.num_rows > 0
    assert all("I'm sorry" not in t["value"] for c in conversations.column("conversations").to_pylist() for t in c)
    # the non-contextual control, once materialized, adds its own mix and changes nothing else
    mixes = Counter(conversations.column("mix").to_pylist())
    assert "noncontextual" not in Counter(before_control.column("mix").to_pylist()) and mixes["noncontextual"] > 0
    assert {m: n for m, n in mixes.items() if m != "noncontextual"} == Counter(before_control.column("mix").to_pylist())
    control_captions = table(store, "noncontextual_captions", key)
    assert set(control_captions.column("prompt_version").to_pylist()) == {NONCONTEXTUAL.version}
