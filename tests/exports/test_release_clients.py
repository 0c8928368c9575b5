"""A release as its users load it, with clients this project did not write (release_clients.py): every config and
split through `datasets`, a batch per config through TRL's VLM collator and an Idefics3 processor, the README's TRL
invocation run for a step, LLaVA records resolved against the folder its README names, every shipped image hashed
again. Two exports: the shared one (every mix, both splits full) and an uneven one shaped like a small VisCon-1M
release (no control mix, a config the page hash gives no test page, a config on a single page)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from upath import UPath

from tests.chain.conversation_samples import sample, write_images
from tests.exports.llava_validator import validate_llava_file
from tests.exports.release_clients import (
    collate_every_config,
    counts_in_table,
    declared_configs,
    llava_image_folder,
    llava_records,
    load_every_config,
    sha256,
    shipped_hashes,
)
from viscon_dagster.core.chain.conversations import MIXES, build_conversations
from viscon_dagster.core.exports.release import export_conversations
from viscon_dagster.core.exports.split import SPLITS, split_for

VERSION = "20261201T101500.123Z-1a2b3c4d"
UNEVEN_FRACTION = 0.3
SINGLE_PAGE = 1  # the one page with free-form Q&A


def uneven_rows() -> list[dict]:
    """Pages the hash puts in test have no MCQ, so `mcq` draws no test page; free-form Q&A sits on a single (train)
    page; no page has a control caption, so `noncontextual` is not in the release."""
    rows = []
    for doc in range(10):
        test = split_for(f"https://example.org/page/{doc}", UNEVEN_FRACTION) == "test"
        rows += [sample(doc, i, shard="1m-0", noncontextual=False, n_mcq=0 if test else 1,
                        n_free=2 if doc == SINGLE_PAGE else 0) for i in range(2)]
    assert {split_for(r["doc_url"], UNEVEN_FRACTION) for r in rows} == {"train", "test"}
    assert split_for(f"https://example.org/page/{SINGLE_PAGE}", UNEVEN_FRACTION) == "train"
    return rows


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """A small release shaped like the demo's VisCon-1M: configs the page hash gives no test page."""
    rows = uneven_rows()
    root = UPath(tmp_path_factory.mktemp("uneven-storage"))
    write_images(root, rows)
    out = UPath(tmp_path_factory.mktemp("uneven") / "viscon_1m_release" / "versions" / VERSION)
    summary = export_conversations([build_conversations(rows, MIXES).table()], root, out,
                                   test_fraction=UNEVEN_FRACTION, version=VERSION, release_name="viscon_1m_release",
                                   pretty_name="VisCon-1M (reproduction)")
    return Path(out.path), summary


@pytest.fixture(scope="module")
def releases(exported, uneven):
    out, summary = exported
    return {"full": (Path(out.path), summary), "uneven": uneven}


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    from transformers import AutoProcessor

    from viscon_dagster.demo.tiny_models import build_tiny_vlm

    return AutoProcessor.from_pretrained(build_tiny_vlm(tmp_path_factory.mktemp("tiny") / "vlm"))


@pytest.mark.parametrize("name", ["full", "uneven"])
def test_every_config_and_split_loads_in_every_format(releases, name, tmp_path):
    version, summary = releases[name]
    counts = summary.counts["hf"]
    assert all(set(splits) == set(SPLITS) for splits in counts.values())
    assert summary.counts["idefics"] == summary.counts["llava"] == counts
    declared = {c: [s for s in SPLITS if n[s]] for c, n in counts.items()}  # an empty split cannot be loaded
    for folder in ("hf", "idefics"):  # each card declares the splits of every config, and says how many rows
        assert declared_configs(version / folder / "README.md") == declared
        assert counts_in_table(version / folder / "README.md") == counts
        assert load_every_config(version / folder, tmp_path / "cache") == \
            {c: {s: n[s] for s in SPLITS if n[s]} for c, n in counts.items()}
    assert counts_in_table(version / "llava" / "README.md") == counts
    assert llava_records(version) == (counts, [])
    if name == "full":
        assert declared == {c: list(SPLITS) for c in MIXES} and summary.split_moves == \
            {"pages_moved_to_train": 0, "pages_moved_to_test": 0}
    else:  # mcq drew no test page from the hash: one page nearest the threshold moved, with all its records
        assert "noncontextual" not in counts
        assert summary.split_moves == {"pages_moved_to_train": 0, "pages_moved_to_test": 1}
        assert all(n["train"] > 0 and n["test"] > 0 for c, n in counts.items() if c != "free_form")
        assert counts["free_form"] == {"train": 2, "test": 0} and declared["free_form"] == ["train"]


def test_a_moved_page_is_in_test_in_every_config_and_format(releases):
    version, _ = releases["uneven"]
    by_split: dict[str, set[str]] = {s: set() for s in SPLITS}
    for path in (version / "hf" / "data").rglob("*.parquet"):
        by_split[path.name.split("-")[0]] |= set(pq.read_table(path, columns=["doc_url"])["doc_url"].to_pylist())
    for path in (version / "llava").glob("*/*.json"):
        by_split[path.stem] |= {r["doc_url"] for r in json.loads(path.read_text())}
    assert not by_split["train"] & by_split["test"]  # no page in both splits, across configs and formats
    moved = {u for u in by_split["test"] if split_for(u, UNEVEN_FRACTION) == "train"}
    assert len(moved) == 1
    card = (version / "hf" / "README.md").read_text()
    assert "1 page nearest the threshold moved to test" in card
    assert "`free_form` test has no record" in card


def test_an_empty_split_is_a_file_with_the_schema(releases, tmp_path):
    """Only a config on a single page keeps an empty split: its file is there, with the schema and no row group."""
    from datasets import load_dataset

    version, _ = releases["uneven"]
    for folder in ("hf/data", "idefics"):
        (empty,) = (version / folder / "free_form").glob("test-*.parquet")
        assert empty.name == "test-00000-of-00001.parquet" and pq.read_metadata(empty).num_rows == 0
        assert pq.read_metadata(empty).num_row_groups == 0
        assert pq.read_schema(empty) == pq.read_schema(next((version / folder / "free_form").glob("train-*.parquet")))
        globbed = load_dataset("parquet", data_files=str(version / folder / "free_form" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
        assert globbed.num_rows == 2
    assert json.loads((version / "llava" / "free_form" / "test.json").read_text()) == []


@pytest.mark.parametrize("name", ["full", "uneven"])
def test_llava_records_resolve_against_the_folder_the_readme_names(releases, name):
    version, summary = releases[name]
    folder = llava_image_folder(version)
    assert folder == version / "llava"
    assert llava_records(version)[1] == []
    # the natural guess the README warns against fails on every record
    leaky = version / "llava" / "leaky" / "train.json"
    assert len(validate_llava_file(leaky, folder / "images")) == summary.counts["llava"]["leaky"]["train"] > 0
    readme = (version / "llava" / "README.md").read_text()
    assert "--version v1" in readme and re.search(r"`--version plain`.*fits only `captions`", readme)
    assert "--data_path $D/llava/leaky/train.json" in readme
    if name == "uneven":  # a concrete version: the README names it and the release folder
        assert f"D=$R/versions/{VERSION}" in readme and "R=.viscon/storage/viscon_1m_release" in readme


@pytest.mark.parametrize("name", ["full", "uneven"])
def test_every_shipped_image_hashes_to_its_shipped_sha256(releases, name):
    version, summary = releases[name]
    checked, bad = shipped_hashes(version)
    records = sum(n for mixes in summary.counts["hf"].values() for n in mixes.values())
    assert bad == [] and checked == 3 * records > 0  # every record of every format
    row = pq.read_table(next((version / "hf" / "data" / "leaky").glob("train-*.parquet"))).to_pylist()[0]
    # the source hash names the file; the shipped JPEG was re-encoded, so its hash differs
    assert row["image"]["path"] == f"images/{row['source_sha256'][:2]}/{row['source_sha256']}.jpg"
    assert row["shipped_sha256"] == sha256(row["image"]["bytes"]) != row["source_sha256"]
    assert sha256((version / "llava" / row["image"]["path"]).read_bytes()) == row["shipped_sha256"]


def test_the_hash_check_finds_a_wrong_hash(releases, tmp_path):
    import shutil

    version, _ = releases["uneven"]
    copy = tmp_path / "copy"
    shutil.copytree(version, copy)
    leaky = copy / "llava" / "leaky" / "train.json"
    records = json.loads(leaky.read_text())
    records[0]["shipped_sha256"] = records[0]["source_sha256"]  # what `image_sha256` used to mean
    leaky.write_text(json.dumps(records))
    checked, bad = shipped_hashes(copy)
    assert len(bad) == 1 and bad[0].startswith(f"llava {records[0]['id']}: shipped_sha256")


@pytest.mark.parametrize("name", ["full", "uneven"])
def test_a_batch_of_every_config_through_trls_vlm_collator(releases, name, processor, tmp_path):
    version, summary = releases[name]
    done = collate_every_config(version, processor, tmp_path / "cache")
    assert set(done) == set(summary.counts["idefics"]) and all(n > 0 for n in done.values())


@pytest.mark.slow
def test_the_idefics_readme_trl_invocation_trains_a_step(releases, processor, tmp_path):
    """The README's Python block as written, with the tiny Idefics3 in place of SmolVLM and a one-step budget."""
    version, _ = releases["uneven"]
    readme = (version / "idefics" / "README.md").read_text()
    (code,) = re.findall(r"## Training with TRL.*?```python\n(.*?)```", readme, re.S)
    model_dir = tmp_path / "model"
    from viscon_dagster.demo.tiny_models import build_tiny_vlm

    build_tiny_vlm(model_dir)
    assert 'D = ".viscon/storage/viscon_1m_release/versions/' + VERSION in code
    code = (code.replace('"HuggingFaceTB/SmolVLM-256M-Instruct"', repr(str(model_dir)))
            .replace(f'".viscon/storage/viscon_1m_release/versions/{VERSION}"', repr(str(version)))
            .replace('output_dir="smolvlm-viscon"', f'output_dir={str(tmp_path / "run")!r}, max_steps=1, '
                     'per_device_train_batch_size=2, report_to="none", use_cpu=True, save_strategy="no"'))
    scope: dict = {}
    exec(compile(code, "idefics/README.md", "exec"), scope)
    assert scope["trainer"].state.global_step == 1
    assert scope["ds"]["train"].num_rows > 0 and "test" in scope["ds"]


def test_the_card_lists_only_the_configs_the_release_has(releases):
    full = (releases["full"][0] / "hf" / "README.md").read_text()
    uneven = (releases["uneven"][0] / "hf" / "README.md").read_text()
    assert set(declared_configs(releases["full"][0] / "hf" / "README.md")) == set(MIXES)
    assert "`noncontextual` — the control" in full and "is made on request" not in full
    configs = set(declared_configs(releases["uneven"][0] / "hf" / "README.md"))
    assert configs == set(MIXES) - {"noncontextual"}
    assert "`noncontextual` — " not in uneven and "(`noncontextual`: the same images captioned without the page" \
        in uneven and "is made on request" in uneven
    for card in (full, uneven):  # the two hashes named apart, and how to train on each format
        assert "`source_sha256` is the SHA-256 of the bytes fetched" in card
        assert "`shipped_sha256` is the SHA-256" in card
        assert "image_sha256" not in card
        assert "## Training with it" in card and "--image_folder $D/llava" in card and "SFTTrainer(" in card
        assert re.search(r'load_dataset\(".*/hf", "leaky"\)', card)
    assert f'load_dataset(".viscon/storage/viscon_1m_release/versions/{VERSION}/hf", "leaky")' in uneven


def test_two_releases_share_a_datasets_cache_without_mixing_their_rows(releases, tmp_path, storage_root):
    """Every release's folder is named `hf/` with the same configs: the cards' dataset_info (rows per split, and the
    release and version named) keeps their cache entries apart, and `datasets` checks the rows against it."""
    import shutil

    from datasets import load_dataset
    from datasets.exceptions import NonMatchingSplitsSizesError

    cache = str(tmp_path / "shared-cache")
    for name in ("full", "uneven", "full"):
        version, summary = releases[name]
        ds = load_dataset(str(version / "hf"), "qa", cache_dir=cache)
        assert {s: ds[s].num_rows for s in ds} == summary.counts["hf"]["qa"], name
    # the same records released again as a new version: a cache entry of its own, not the old version's
    version, _ = releases["uneven"]
    again = UPath(tmp_path / "viscon_1m_release" / "versions" / "20261202T101500.123Z-5e6f7a8b")
    export_conversations([build_conversations(uneven_rows(), MIXES).table()], storage_root, again,
                         formats=["hf"], test_fraction=UNEVEN_FRACTION, release_name="viscon_1m_release",
                         version="20261202T101500.123Z-5e6f7a8b", pretty_name="VisCon-1M (reproduction)")
    files = {load_dataset(str(v / "hf"), "leaky", cache_dir=cache)["train"].cache_files[0]["filename"]
             for v in (version, Path(again.path))}
    assert len(files) == 2
    # a card whose rows do not match its files is refused
    import yaml

    tampered = tmp_path / "tampered"
    shutil.copytree(version / "hf", tampered)
    _, front, body = (tampered / "README.md").read_text().split("---\n", 2)
    meta = yaml.safe_load(front)
    (leaky,) = [i for i in meta["dataset_info"] if i["config_name"] == "leaky"]
    assert leaky["description"] == f"VisCon-1M (reproduction) (viscon_1m_release) version {VERSION}: leaky"
    leaky["splits"][0]["num_examples"] += 1
    (tampered / "README.md").write_text("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body)
    with pytest.raises(NonMatchingSplitsSizesError):
        load_dataset(str(tampered), "leaky", cache_dir=str(tmp_path / "cache2"))
