"""No file of a release holds a path of the machine that made it: models go by label, local sources by file name."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest
from upath import UPath

from tests.chain1m.release_files import files_with_paths, machine_paths
from tests.conftest import materialize_partition
from viscon_dagster.core.exports.versions import current_release_path
from viscon_dagster.definitions import RELEASE_JOB, build_definitions
from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample
from viscon_dagster.demo.tiny_models import build_tiny_models
from viscon_dagster.environment import image_fetcher
from viscon_dagster.resources.models import TransformersLocalBackend
from viscon_dagster.resources.shard_source import record_shards

STAGES = ["filtered_docs", "images", "captions", "qa_pairs", "unique_qa_pairs", "conversations"]
SHORT = {"ops": {"captions": {"config": {"max_tokens": 24, "temperature": 1.0}},
                 "qa_pairs": {"config": {"max_tokens": 400, "temperature": 1.0}}}}


@pytest.mark.slow
def test_the_100k_release_names_models_by_label_and_no_machine_path(tmp_path, tokenizer_dir):
    sample, store = tmp_path / "sample", tmp_path / "store"
    write_sample(sample, SampleSpec(shards=1, docs_per_shard=6, seed=5))
    models = build_tiny_models(tmp_path / "models")
    defs = build_definitions(
        storage_root=store.as_uri(), tokenizer=str(tokenizer_dir),
        fetcher=image_fetcher(allowed_file_roots=[str(sample / "images")]),
        caption_model=TransformersLocalBackend(model=str(models["vlm"]), batch_size=16),
        qa_model=TransformersLocalBackend(model=str(models["lm"]), json_max_string_length=12, batch_size=64))
    (key,) = record_shards(defs.resources["storage"], str(sample / "shards"))
    with dg.instance_for_test() as instance:
        assert materialize_partition(defs, STAGES, key, instance, SHORT).success
        release = defs.resolve_job_def(RELEASE_JOB).execute_in_process(instance=instance)
        assert release.success
        metadata = instance.get_latest_materialization_event(dg.AssetKey("captions")).asset_materialization.metadata
    out = current_release_path(UPath(store), "viscon_100k_release")
    records = pq.read_table(next((out / "hf" / "data" / "leaky").glob("*.parquet"))).to_pylist()
    assert records
    assert {r["caption_model"] for r in records} == {metadata["caption_model"].value}
    assert {r["caption_model"].split("@")[0] for r in records} == {"tiny-idefics3"}
    assert {r["qa_model"].split("@")[0] for r in records} == {"tiny-lm"}
    assert all(r["image_url"].startswith("local:") and "/" not in r["image_url"] for r in records)
    card = (out / "hf" / "README.md").read_text()
    assert f"`{metadata['caption_model'].value}`" in card and "## Captioner" not in card  # a teacher, no captioner
    release = store / "viscon_100k_release"  # every file: the pointer, the manifest and the version's formats
    assert files_with_paths(release, machine_paths(store, sample, tmp_path, models["vlm"])) == {}
    # the check itself finds a path where there is one
    (out / "llava" / "planted.json").write_text(f'{{"image_url": "file://{sample}/images/x.jpg"}}')
    planted = str((out / "llava" / "planted.json").relative_to(release))
    assert files_with_paths(release, machine_paths(store, sample)) == {planted: sorted(
        p for p in machine_paths(store, sample) if p in f"file://{sample}/images/x.jpg")}
