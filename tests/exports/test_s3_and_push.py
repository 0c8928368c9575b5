from pathlib import Path

import pytest
from upath import UPath

from tests.chain.conversation_samples import write_images
from tests.exports.llava_validator import validate_llava_file
from viscon_dagster.core.exports.release import export_conversations, parse_hf_target, push_dataset


def s3_options(endpoint: str) -> dict:
    return {"client_kwargs": {"endpoint_url": endpoint}, "key": "testing", "secret": "testing"}


def keys(client, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for page in pages for o in page.get("Contents", []))


@pytest.mark.slow
def test_export_from_s3_storage_to_s3_and_back(s3_server, s3_bucket, shards, tables, tmp_path):
    from datasets import load_dataset

    name, client = s3_bucket
    opts = s3_options(s3_server)
    root, out = UPath(f"s3://{name}/storage", **opts), UPath(f"s3://{name}/exports/v1", **opts)
    write_images(root, [s for shard in shards for s in shard])
    summary = export_conversations(tables, root, out, test_fraction=0.3, max_shard_bytes=20_000)

    written = keys(client, name, "exports/v1/")
    assert written == sorted(f for files in summary.files.values() for f in files)
    assert "hf/README.md" in written and "llava/leaky/train.json" in written
    assert sum(k.startswith("llava/images/") for k in written) == 24
    assert summary.bytes["hf"] == sum(client.head_object(Bucket=name, Key=f"exports/v1/{k}")["ContentLength"]
                                      for k in written if k.startswith("hf/"))

    local = tmp_path / "from_s3"
    for fmt in ("hf", "llava"):
        push_dataset(out / fmt, (local / fmt).as_uri())
    for split in ("train", "test"):
        assert validate_llava_file(local / "llava" / "separate" / f"{split}.json", local / "llava") == []
    ds = load_dataset(str(local / "hf"), "leaky", cache_dir=str(tmp_path / "cache"))
    assert {s: ds[s].num_rows for s in ds} == summary.counts["hf"]["leaky"]
    assert ds["train"][0]["image"].size == (96, 72)

    from tests.exports.hub_double import HubDouble

    with HubDouble() as hub:  # an S3 folder is staged locally, then pushed as one commit
        push_dataset(out / "hf", "hf://datasets/org/viscon@main", endpoint=hub.url, token="t")
    pushed = hub.commits[0]["files"]
    assert sorted(pushed) == [k[len("hf/"):] for k in written if k.startswith("hf/")]
    assert pushed["README.md"] == (local / "hf" / "README.md").read_bytes()


def test_push_local_folder_to_s3_target(s3_server, s3_bucket, exported):
    name, client = s3_bucket
    out, _ = exported
    result = push_dataset(out / "hf", f"s3://{name}/hub/viscon", storage_options=s3_options(s3_server))
    local = Path(out.path) / "hf"
    files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert keys(client, name, "hub/viscon/") == files and result["files"] == len(files)
    assert result["bytes"] == sum((local / f).stat().st_size for f in files)
    card = client.get_object(Bucket=name, Key="hub/viscon/README.md")["Body"].read()
    assert card == (local / "README.md").read_bytes()


def test_hf_targets_name_a_dataset_repo():
    assert parse_hf_target("hf://datasets/org/viscon-100k") == ("org/viscon-100k", None)
    assert parse_hf_target("hf://datasets/org/viscon@v2/") == ("org/viscon", "v2")
    for bad in ("hf://models/org/x", "hf://datasets/justname", "s3://bucket/x"):
        with pytest.raises(ValueError):
            parse_hf_target(bad)


def test_push_to_the_hub_is_one_commit_with_the_token_from_the_environment(exported, monkeypatch):
    from tests.exports.hub_double import HubDouble

    out, _ = exported
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    local = Path(out.path) / "hf"
    files = {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    with HubDouble() as hub:
        result = push_dataset(out / "hf", "hf://datasets/viscon-org/viscon-100k", endpoint=hub.url)
    assert hub.unhandled == []
    assert hub.repos == {"viscon-org/viscon-100k": {"type": "dataset", "private": True}}
    assert len(hub.commits) == 1 and hub.commits[0]["revision"] == "main"
    assert hub.commits[0]["files"] == files  # every shard and the card, byte for byte
    assert hub.validated_cards == [files["README.md"].decode()]
    assert result["commit"] and set(hub.auth) == {"Bearer hf_test_token"}
