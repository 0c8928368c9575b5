"""VisCon-1M end to end: teacher captions (a scripted teacher on loopback, standing in for GPT-4V) train a
real captioner (TRL through Dagster Pipes), its evaluation gate passes, and the 1M chain captions its own shard
with that checkpoint; rows and card name it by label; a new checkpoint marks the 1M captions stale; a checkpoint
without a passed gate captions nothing."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest
from upath import UPath

from tests.chain1m.release_files import files_with_paths, machine_paths
from tests.conftest import materialize_partition
from viscon_dagster.core.captioner.published import GateResult, read_current, read_gate, write_gate
from viscon_dagster.core.exports.versions import current_release_path
from viscon_dagster.definitions import build_definitions
from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample
from viscon_dagster.demo.tiny_models import build_tiny_lm
from viscon_dagster.environment import image_fetcher
from viscon_dagster.partitions import obelics_shards_1m
from viscon_dagster.resources.captioner_backend import CaptionerBackend
from viscon_dagster.resources.models import OpenAIHTTPBackend, TransformersLocalBackend
from viscon_dagster.resources.shard_source import record_shards
from viscon_dagster.resources.storage import upath_for

pytestmark = pytest.mark.slow  # real servers, daemons or training: the slow tier

RECIPE = "tiny-demo"
TEACHER_CHAIN = ["filtered_docs", "images", "captions"]
CHAIN_1M = [f"viscon_1m/{s}" for s in ("filtered_docs", "images", "captions", "qa_pairs", "unique_qa_pairs",
                                       "conversations")]
OP_CONFIG = {
    "captioner_training_pairs": {"test_fraction": 0.3},
    "contextual_captioner": {"max_steps": 12},
    # the demo's gate (the tiny student learns the teacher's frame: demo/steps.DEMO_EVALUATION), no judge model here
    "captioner_evaluation": {"resamples": 200, "gate_gains": ["bleu", "rouge_l"], "judge": False},
    "viscon_1m/captions": {"max_tokens": 24},
    "viscon_1m/qa_pairs": {"max_tokens": 400, "temperature": 1.0},
}


def materialize(defs, instance, selection: list[str], partition_key: str | None = None, **overrides):
    """The selected assets, configured for a short test run (op names are asset keys with `__` for `/`)."""
    ops = {name.replace("/", "__"): {"config": {**OP_CONFIG[name], **overrides.get(name, {})}}
           for name in selection if name in OP_CONFIG}
    return dg.materialize(list(defs.assets), selection=selection, instance=instance, resources=defs.resources,
                          partition_key=partition_key, run_config={"ops": ops}, raise_on_error=False)


def stale_status(instance, defs, key: str, partition: str) -> str:
    """The per-partition staleness the instance reports (the UI's), for this code's asset graph."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(dg.AssetKey.from_user_string(key), partition).value


def train(defs, instance, max_steps: int, evaluate: bool = True):
    selection = ["contextual_captioner", "captioner_evaluation"] if evaluate else ["contextual_captioner"]
    return materialize(defs, instance, selection, RECIPE, contextual_captioner={"max_steps": max_steps})


def failure_message(result) -> str:
    return "\n".join(str(e.event_specific_data.error.message) for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


def test_viscon_1m_with_the_trained_captioner(tmp_path, tokenizer_dir, teacher, tiny_student):
    sample = tmp_path / "sample"
    write_sample(sample, SampleSpec(shards=2, docs_per_shard=24, seed=7, shards_1m=1, docs_per_shard_1m=4))
    store = tmp_path / "store"
    lm = build_tiny_lm(tmp_path / "tiny-lm")
    defs = build_definitions(
        storage_root=store.as_uri(), tokenizer=str(tokenizer_dir),
        fetcher=image_fetcher(allowed_file_roots=[str(sample / "images")]),
        caption_model=OpenAIHTTPBackend(model="teacher-vlm", base_url=teacher, api_key="k", max_attempts=1),
        qa_model=TransformersLocalBackend(model=str(lm), json_max_string_length=12, batch_size=32))
    assert isinstance(defs.resources["captioner_model"], CaptionerBackend)  # what the environment chooses
    storage = defs.resources["storage"]
    root = upath_for(store.as_uri())
    with dg.instance_for_test() as instance:
        for key in record_shards(storage, str(sample / "shards")):
            assert materialize_partition(defs, TEACHER_CHAIN, key, instance).success
        assert materialize(defs, instance, ["captioner_training_pairs"]).success

        (shard,) = record_shards(storage, str(sample / "shards_1m"), "1m")
        instance.add_dynamic_partitions(obelics_shards_1m.name, [shard])

        # before any checkpoint: the 1M captions refuse, saying what to materialize
        early = materialize(defs, instance, CHAIN_1M[:3], shard)
        assert not early.success
        assert f"no trained captioner for recipe '{RECIPE}': materialize contextual_captioner[{RECIPE}]" in \
            failure_message(early)

        assert train(defs, instance, 12).success
        published, gate = read_current(root, RECIPE), read_gate(root, RECIPE)
        assert gate.passed and gate.checkpoint_sha == published.sha

        run = materialize(defs, instance, CHAIN_1M, shard)
        assert run.success, failure_message(run)
        release = materialize(defs, instance, ["viscon_1m_release"])
        assert release.success, failure_message(release)
        assert stale_status(instance, defs, "viscon_1m/captions", shard) == "FRESH"

        # every row names the captioner by recipe and checkpoint sha
        label = f"contextual-captioner/{RECIPE}@{published.sha[:12]}"
        captions = pq.read_table(store / "viscon_1m" / "captions" / f"{shard}.parquet")
        assert captions.num_rows > 0 and set(captions.column("caption_model").to_pylist()) == {label}
        conversations = pq.read_table(store / "viscon_1m" / "conversations" / f"{shard}.parquet")
        assert conversations.num_rows > 0 and set(conversations.column("caption_model").to_pylist()) == {label}
        captions_meta = instance.get_latest_materialization_event(dg.AssetKey(["viscon_1m", "captions"]))
        assert captions_meta.asset_materialization.metadata["caption_model"].value == label

        # the 1M release: its own folder, the card names the captioner, its metrics and its teacher
        out = current_release_path(UPath(store), "viscon_1m_release")
        card = (out / "hf" / "README.md").read_text()
        assert f"### `{label}`" in card and "teacher (whose captions it learned from): `teacher-vlm`" in card
        assert "evaluation gate: passed" in card and "BLEU" in card
        exported = pq.read_table(next((out / "hf" / "data" / "captions").glob("train-*.parquet")))
        assert set(exported.column("caption_model").to_pylist()) == {label}
        assert all(u.startswith("local:") for u in exported.column("image_url").to_pylist())
        assert files_with_paths(store / "viscon_1m_release", machine_paths(store, sample, tmp_path)) == {}

        # a new checkpoint: the 1M captions go stale, and are refused until it is evaluated
        assert train(defs, instance, 13, evaluate=False).success
        newer = read_current(root, RECIPE)
        assert newer.sha != published.sha
        assert stale_status(instance, defs, "viscon_1m/captions", shard) == "STALE"
        refused = materialize(defs, instance, ["viscon_1m/captions"], shard)
        assert not refused.success
        assert f"{newer.label} has not been evaluated (the last gate was for {published.sha[:12]})" in \
            failure_message(refused)

        # a failed gate stops the 1M captions: nothing is captioned, the last captions stay as they were
        write_gate(root, GateResult(RECIPE, newer.sha, False, {"bleu_tuned": 0.1, "bleu_base": 0.2}))
        stopped = materialize(defs, instance, ["viscon_1m/captions"], shard)
        assert not stopped.success
        message = failure_message(stopped)
        assert f"{newer.label} failed its evaluation gate" in message and "'bleu_base': 0.2" in message
        assert pq.read_table(store / "viscon_1m" / "captions" / f"{shard}.parquet").equals(captions)
