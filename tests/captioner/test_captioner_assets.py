"""The captioner end to end in Dagster: teacher captions (a scripted teacher on loopback) → training pairs →
training through Dagster Pipes (a real subprocess, real TRL) → evaluation of base vs tuned on held-out pages."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
from transformers import AutoModelForImageTextToText, AutoTokenizer

from tests.conftest import materialize_partition
from viscon_dagster.core.captioner.published import read_current, read_gate
from viscon_dagster.core.captioner.weights import weights_sha
from viscon_dagster.definitions import build_definitions
from viscon_dagster.environment import image_fetcher
from viscon_dagster.partitions import record_shards
from viscon_dagster.resources.models import OpenAIHTTPBackend

CHAIN = ["filtered_docs", "images", "captions"]
# a short page context keeps training cheap; the pairs rebuild the teacher's requests with the same budget
CONTEXT_TOKENS = 300
CAPTIONS_CONFIG = {"ops": {"captions": {"config": {"context_tokens": CONTEXT_TOKENS}}}}
PAIRS_CONFIG = {"ops": {"captioner_training_pairs": {"config": {"test_fraction": 0.3,
                                                                 "context_tokens": CONTEXT_TOKENS}}}}
SHORT_TRAINING = {"ops": {"contextual_captioner": {"config": {"max_steps": 8}},
                          "captioner_evaluation": {"config": {"resamples": 200}}}}


def test_captioner_learns_from_the_teacher_end_to_end(tmp_path, sample_dir, tokenizer_dir, teacher, tiny_student):
    store = tmp_path / "store"
    defs = build_definitions(
        storage_root=store.as_uri(), tokenizer=str(tokenizer_dir),
        fetcher=image_fetcher(allowed_file_roots=[str(sample_dir / "images")]),
        caption_model=OpenAIHTTPBackend(model="teacher-vlm", base_url=teacher, api_key="k", max_attempts=1),
        qa_model=OpenAIHTTPBackend(model="unused", base_url=teacher, api_key="k", max_attempts=1))
    keys = record_shards(defs.resources["storage"], str(sample_dir / "shards"))
    with dg.instance_for_test() as instance:
        for key in keys:
            assert materialize_partition(defs, CHAIN, key, instance, CAPTIONS_CONFIG).success
        pairs_run = dg.materialize(list(defs.assets), selection=["captioner_training_pairs"], instance=instance,
                                   resources=defs.resources, run_config=PAIRS_CONFIG)
        assert pairs_run.success
        (split_check,) = pairs_run.get_asset_check_evaluations()
        assert split_check.passed
        pairs = pq.read_table(store / "captioner_training_pairs.parquet")
        splits = pairs.column("split").to_pylist()
        assert splits.count("train") >= 16 and splits.count("test") >= 4
        assert set(pairs.column("teacher").to_pylist()) == {"teacher-vlm"}
        train_run = dg.materialize(list(defs.assets), selection=["contextual_captioner", "captioner_evaluation"],
                                   instance=instance, resources=defs.resources, partition_key="tiny-demo",
                                   run_config=SHORT_TRAINING, raise_on_error=False)
        assert train_run.success
        checks = {c.check_name: c for c in train_run.get_asset_check_evaluations()}
        trained = instance.get_latest_materialization_event(dg.AssetKey("contextual_captioner"))
        logs = [e.message for e in instance.all_logs(train_run.run_id)]

    published = read_current(dg_upath(store), "tiny-demo")
    model_dir = store / published.path
    # the data version is the content hash of the merged weights, and names the model directory
    assert trained.asset_materialization.tags["dagster/data_version"] == published.sha == weights_sha(model_dir)
    assert published.label == f"contextual-captioner/tiny-demo@{published.sha[:12]}"
    for name in ("model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "chat_template.jinja",
                 "adapter/adapter_config.json", "adapter/adapter_model.safetensors", "README.md"):
        assert (model_dir / name).is_file(), name
    assert AutoTokenizer.from_pretrained(model_dir).chat_template  # vLLM renders prompts with it
    assert "teacher-vlm" in (model_dir / "README.md").read_text()
    assert "corpus BLEU" in (model_dir / "README.md").read_text()  # the evaluation wrote its scores into the card
    # loss came back through Pipes, line by line, and fell
    assert any("train step 8/8 loss" in m for m in logs)
    history = trained.asset_materialization.metadata["loss_history"].value
    assert [p["step"] for p in history] == list(range(1, 9))
    assert sum(p["loss"] for p in history[-3:]) < sum(p["loss"] for p in history[:3])
    # the tuned captioner beats its untuned base on held-out pages, on both metrics (the blocking check)
    assert checks["tuned_beats_base"].passed
    gate = read_gate(dg_upath(store), "tiny-demo")
    assert gate.passed and gate.checkpoint_sha == published.sha
    assert gate.metrics["tuned"]["bleu"]["value"] > gate.metrics["base"]["bleu"]["value"]
    assert gate.metrics["tuned"]["rouge_l"]["value"] > gate.metrics["base"]["rouge_l"]["value"]
    assert gate.metrics["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    predictions = pq.read_table(store / "captioner_evaluation" / "tiny-demo" / "predictions.parquet")
    assert predictions.num_rows == splits.count("test")
    assert set(predictions.column("doc_url").to_pylist()).isdisjoint(
        {u for u, s in zip(pairs.column("doc_url").to_pylist(), splits) if s == "train"})
    # the checkpoint reloads with transformers
    assert AutoModelForImageTextToText.from_pretrained(model_dir).config.model_type == "idefics3"


def dg_upath(path):
    from upath import UPath

    return UPath(path)
