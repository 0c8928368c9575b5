"""Both releases the demo makes (VisCon-100K and VisCon-1M), built through Dagster on the sample corpus with the
tiny local models, read with the clients their users have (release_clients.py): `datasets` for every config and
split of every parquet format, TRL's VLM collator with the tiny Idefics3's processor, LLaVA records resolved
against the folder the README names, every shipped image hashed again, no text a model wrote left unclean, no
path of this machine. The 1M chain is captioned by the tiny VLM standing in for the trained captioner (training
it is tests/chain1m/test_viscon_1m.py's business); what matters here is a small release of its own shards."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from upath import UPath

from tests.chain1m.release_files import files_with_paths, machine_paths
from tests.conftest import materialize_partition
from tests.exports.release_clients import (
    collate_every_config,
    counts_in_table,
    declared_configs,
    llava_records,
    load_every_config,
    shipped_hashes,
)
from viscon_dagster.core.chain.text import is_unclean
from viscon_dagster.core.exports.split import SPLITS
from viscon_dagster.core.exports.versions import current_release_path

STAGES = ["filtered_docs", "images", "captions", "qa_pairs", "unique_qa_pairs", "conversations"]
CHAIN_1M = [f"viscon_1m/{s}" for s in STAGES]
SHORT = {"captions": {"max_tokens": 24, "temperature": 1.0}, "qa_pairs": {"max_tokens": 400, "temperature": 1.0}}
RELEASES = ("viscon_100k_release", "viscon_1m_release")


def _config(names: list[str]) -> dict:
    ops = {}
    for name in names:
        stage = name.split("/")[-1]
        if stage in SHORT or stage == "noncontextual_captions":
            ops[name.replace("/", "__")] = {"config": SHORT.get(stage, SHORT["captions"])}
    return {"ops": ops}


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tokenizer_dir):
    from viscon_dagster.definitions import build_definitions
    from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample
    from viscon_dagster.demo.tiny_models import build_tiny_models
    from viscon_dagster.environment import image_fetcher
    from viscon_dagster.partitions import obelics_shards_1m
    from viscon_dagster.resources.models import TransformersLocalBackend
    from viscon_dagster.resources.shard_source import record_shards

    tmp = tmp_path_factory.mktemp("demo")
    sample, store = tmp / "sample", tmp / "store"
    write_sample(sample, SampleSpec(shards=1, docs_per_shard=6, seed=5, shards_1m=1, docs_per_shard_1m=4))
    models = build_tiny_models(tmp / "models")
    vlm = lambda: TransformersLocalBackend(model=str(models["vlm"]), batch_size=16)  # noqa: E731
    defs = build_definitions(
        storage_root=store.as_uri(), tokenizer=str(tokenizer_dir),
        fetcher=image_fetcher(allowed_file_roots=[str(sample / "images")]), caption_model=vlm(), captioner_model=vlm(),
        qa_model=TransformersLocalBackend(model=str(models["lm"]), json_max_string_length=12, batch_size=64))
    storage = defs.resources["storage"]
    (key,) = record_shards(storage, str(sample / "shards"))
    (key_1m,) = record_shards(storage, str(sample / "shards_1m"), "1m")
    metadata = {}
    with dg.instance_for_test() as instance:
        # the 100K chain with its control, so that release holds `noncontextual`; the 1M release does not
        teacher = [*STAGES[:3], "noncontextual_captions", *STAGES[3:]]
        assert materialize_partition(defs, teacher, key, instance, _config(teacher)).success
        instance.add_dynamic_partitions(obelics_shards_1m.name, [key_1m])
        assert dg.materialize(list(defs.assets), selection=CHAIN_1M, resources=defs.resources, partition_key=key_1m,
                              instance=instance, run_config=_config(CHAIN_1M)).success
        for release in RELEASES:
            assert dg.materialize(list(defs.assets), selection=[release], resources=defs.resources,
                                  instance=instance).success
            metadata[release] = instance.get_latest_materialization_event(
                dg.AssetKey(release)).asset_materialization.metadata
        for name in ("captions", "qa_pairs", "viscon_1m/captions", "viscon_1m/qa_pairs"):
            m = instance.get_latest_materialization_event(dg.AssetKey.from_user_string(name)).asset_materialization
            metadata[name] = {k: m.metadata[k].value for k in ("text_repaired", "text_unrepairable")}
    versions = {r: Path(current_release_path(UPath(store), r).path) for r in RELEASES}
    return {"versions": versions, "metadata": metadata, "store": store, "vlm": models["vlm"],
            "machine": machine_paths(store, sample, tmp, models["vlm"])}


@pytest.fixture(scope="module")
def processor(demo):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(demo["vlm"])


@pytest.mark.slow
@pytest.mark.parametrize("release", RELEASES)
def test_every_config_and_split_of_the_demo_release_loads(demo, release, processor, tmp_path):
    version = demo["versions"][release]
    counts = demo["metadata"][release]["counts"].value
    hf = counts["hf"]
    assert counts["idefics"] == counts["llava"] == hf and hf
    # both splits of every config, unless the config sits on a single page (then the card says so)
    pages = {c: {r["doc_url"] for s in SPLITS for r in json.loads((version / "llava" / c / f"{s}.json").read_text())}
             for c in hf}
    assert all(hf[c]["train"] and hf[c]["test"] or len(pages[c]) == 1 for c in hf), (hf, pages)
    # the manifest names the pages moved across the hash split (so every config has both); each is there in every
    # config, and no page is in both splits
    in_split = {s: {r["doc_url"] for f in (version / "llava").glob(f"*/{s}.json") for r in json.loads(f.read_text())}
                for s in SPLITS}
    assert not in_split["train"] & in_split["test"]
    moved = json.loads((version / "release.json").read_text())["split"]["moved"]
    meta = demo["metadata"][release]
    assert len(moved) == meta["pages_moved_to_test"].value + meta["pages_moved_to_train"].value
    assert all(url in in_split[split] for url, split in moved.items())
    loadable = {c: {s: n for s, n in hf[c].items() if n} for c in hf}
    for folder in ("hf", "idefics"):
        assert counts_in_table(version / folder / "README.md") == hf
        assert load_every_config(version / folder, tmp_path / "cache") == loadable
    records, errors = llava_records(version)
    assert errors == [] and records == hf
    checked, bad = shipped_hashes(version)
    assert bad == [] and checked == 3 * sum(n for c in hf.values() for n in c.values())
    assert set(collate_every_config(version, processor, tmp_path / "cache")) == set(hf)
    # the card lists what the release holds: the control only where it was made
    configs = set(declared_configs(version / "hf" / "README.md"))
    card = (version / "hf" / "README.md").read_text()
    if release == "viscon_100k_release":
        assert "noncontextual" in configs and "is made on request" not in card
    else:
        assert "noncontextual" not in configs and "is made on request" in card
    assert files_with_paths(version, demo["machine"]) == {}


@pytest.mark.slow
def test_no_text_a_model_wrote_is_left_unclean_in_the_demo_releases(demo):
    """The tiny random-weight models write control characters and broken UTF-8 freely: the shards count what
    cleaning did, and no record of either release holds a control character (but newline and tab) or U+FFFD."""
    for name in ("captions", "qa_pairs", "viscon_1m/captions", "viscon_1m/qa_pairs"):
        assert set(demo["metadata"][name]) == {"text_repaired", "text_unrepairable"}
    store = demo["store"]
    fixes = {}
    for folder in ("captions", "viscon_1m/captions", "qa_pairs", "viscon_1m/qa_pairs"):
        table = pq.read_table(next((store / folder).glob("*.parquet")), columns=["text_fix"])
        fixes[folder] = {f: table["text_fix"].to_pylist().count(f) for f in ("repaired", "unrepairable")}
    assert {n: {"text_repaired": f["repaired"], "text_unrepairable": f["unrepairable"]} for n, f in fixes.items()} \
        == {n: demo["metadata"][n] for n in fixes}
    for version in demo["versions"].values():
        turns = [t["value"] for f in (version / "llava").glob("*/*.json") for r in json.loads(f.read_text())
                 for t in r["conversations"]]
        assert turns and not [t for t in turns if is_unclean(t)]
