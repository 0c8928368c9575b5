"""A release is published whole: each run writes `versions/<version>/` and only then rewrites `CURRENT`.

Through the release asset on a real local folder and on S3 (moto on loopback): a release killed with SIGKILL
while it writes (a child process), and one whose S3 store goes away mid-release (a loopback proxy that stops),
each leave the previous release current, byte for byte, and loadable with `datasets`; three releases keep the
two newest; the Hub (a loopback double of its upload API) gets only a complete version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from dagster_aws.s3 import S3Resource
from upath import UPath

from tests.chain.conversation_samples import samples, write_images
from tests.exports.hub_double import HubDouble
from tests.exports.release_child import NAME, materialize
from tests.exports.test_preview import SHARDS, stage_tables, write_storage
from tests.images.s3_proxy import StoppingProxy
from viscon_dagster.core.exports.release import push_release
from viscon_dagster.core.exports.storage_io import copy_tree
from viscon_dagster.core.exports.versions import (
    MANIFEST,
    POINTER,
    IncompleteVersion,
    ReleaseNotFound,
    current_release_path,
    list_versions,
    new_version_id,
    publish,
    read_pointer,
    require_complete,
    version_path,
    write_manifest,
)
from viscon_dagster.core.files.parquet import write_parquet
from viscon_dagster.resources.hub import HubResource
from viscon_dagster.resources.storage import StorageResource

REPO = Path(__file__).resolve().parents[2]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def s3_objects(client, bucket: str, prefix: str) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix):]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            for page in pages for o in page.get("Contents", [])}


def leaky(hf: Path, cache: Path) -> dict[str, int]:
    from datasets import load_dataset

    ds = load_dataset(str(hf), "leaky", cache_dir=str(cache))
    return {split: ds[split].num_rows for split in ds}


def local_storage(root: Path) -> StorageResource:
    return StorageResource(root=root.as_uri(), s3=S3Resource())


def released(result) -> dict:
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result.asset_materializations_for_node(NAME)[0].metadata


# --- version ids, the pointer, retention (core) ------------------------------------------------------------


def test_version_ids_sort_by_time_and_differ_by_run():
    t = datetime(2026, 12, 1, 10, 15, 0, 123456, tzinfo=UTC)
    a = new_version_id(t, salt="run-a")
    assert a.startswith("20261201T101500.123Z-") and len(a) == len("20261201T101500.123Z-") + 8
    assert new_version_id(t, salt="run-a") == a != new_version_id(t, salt="run-b")  # same ms, other run
    later = [new_version_id(t + timedelta(milliseconds=ms), salt=s) for ms, s in ((1, "z"), (1000, "a"), (60_000, "0"))]
    assert sorted([*later, a], key=str) == [a, *later]  # text order is time order, whatever the digest
    with pytest.raises(ValueError, match="not a release version id"):
        version_path(UPath("/tmp/r"), "../../etc")


def make_version(release: UPath, version: str, text: str, complete: bool = True) -> None:
    folder = version_path(release, version)
    (folder / "hf").mkdir(parents=True)
    (folder / "hf" / "README.md").write_text(text)
    if complete:
        write_manifest(folder, version, formats=["hf"])


def test_current_release_path_reads_the_pointer_and_says_what_is_missing(tmp_path):
    root = UPath(tmp_path)
    with pytest.raises(ReleaseNotFound, match=f"no current release at {tmp_path}/{NAME} \\(no CURRENT file\\)"):
        current_release_path(root, NAME)
    release = root / NAME
    make_version(release, v := new_version_id(salt="1"), "one")
    with pytest.raises(ReleaseNotFound):  # written but never published: not current
        current_release_path(root, NAME)
    publish(release, v)
    assert (release / POINTER).read_text() == v + "\n"
    assert current_release_path(root, NAME) == release / "versions" / v
    (release / POINTER).write_text("../elsewhere\n")
    with pytest.raises(ValueError, match="CURRENT: not a release version id"):
        current_release_path(root, NAME)


def test_retention_keeps_the_newest_complete_versions_and_sweeps_only_stale_unfinished_ones(tmp_path):
    release = UPath(tmp_path / NAME)
    now = datetime.now(UTC)
    old_unfinished = new_version_id(now - timedelta(days=2), salt="killed long ago")
    make_version(release, old_unfinished, "x", complete=False)
    versions = [new_version_id(now - timedelta(minutes=10 - k), salt=str(k)) for k in range(4)]
    recent_unfinished = new_version_id(now - timedelta(minutes=1), salt="maybe still writing")
    make_version(release, recent_unfinished, "x", complete=False)
    for v in versions:
        make_version(release, v, v)
    newer_in_flight = new_version_id(now + timedelta(minutes=1), salt="a later release, not yet published")
    make_version(release, newer_in_flight, "x", complete=False)

    published = publish(release, versions[2], keep=3)
    assert published.became_current and published.previous is None
    assert published.kept == [versions[2], versions[1], versions[0]]
    assert published.removed == [old_unfinished]  # 2 days old: its writer is gone
    assert published.incomplete == [recent_unfinished, newer_in_flight]
    published = publish(release, versions[3])  # default: keep 2
    assert published.previous == versions[2] and published.kept == [versions[3], versions[2]]
    assert published.removed == [versions[0], versions[1]]
    assert list_versions(release) == sorted([versions[2], recent_unfinished, versions[3], newer_in_flight])
    with pytest.raises(ValueError, match="keep must be at least 1"):
        publish(release, versions[3], keep=0)


def test_an_unfinished_version_is_never_published_and_an_older_one_never_moves_the_pointer_back(tmp_path):
    release = UPath(tmp_path / NAME)
    now = datetime.now(UTC)
    first, second, late = (new_version_id(now + timedelta(seconds=k), salt=s)
                           for k, s in enumerate(("first", "second", "late")))
    make_version(release, first, "first")
    make_version(release, second, "second")
    make_version(release, late, "late", complete=False)
    with pytest.raises(IncompleteVersion, match=f"has no {MANIFEST}"):
        publish(release, late)
    assert read_pointer(release) is None
    publish(release, second)
    older = publish(release, first)  # it started first but finished last
    assert not older.became_current and older.current == second == read_pointer(release)
    (version_path(release, second) / "hf" / "README.md").write_text("truncated")
    with pytest.raises(IncompleteVersion, match="1 file\\(s\\) of its manifest missing or of another size"):
        require_complete(version_path(release, second))


# --- through the release asset -----------------------------------------------------------------------------


@pytest.mark.slow
def test_three_releases_keep_the_two_newest_each_whole_and_named(tmp_path):
    root = tmp_path / "storage"
    write_storage(UPath(root))
    storage = local_storage(root)
    metas = [released(materialize(storage, list(SHARDS))) for _ in range(3)]
    versions = [m["version"].value for m in metas]
    assert versions == sorted(versions) and len(set(versions)) == 3
    release = root / NAME
    assert (release / POINTER).read_text() == versions[2] + "\n"
    assert sorted(p.name for p in (release / "versions").iterdir()) == versions[1:]  # the oldest was deleted
    assert sorted(p.name for p in release.iterdir()) == [POINTER, "versions"]
    assert metas[2]["previous_version"].value == versions[1]
    assert metas[2]["kept_versions"].value == [versions[2], versions[1]]
    assert metas[2]["removed_versions"].value == [versions[0]]
    assert metas[1]["removed_versions"].value == []
    current = current_release_path(UPath(root), NAME)
    assert Path(current) == release / "versions" / versions[2] == Path(metas[2]["path"].value)
    # the card and the preview name their version; the manifest lists every file with its size
    assert f"\nRelease version `{versions[2]}`.\n" in (current / "hf" / "README.md").read_text()
    assert f"release version <code>{versions[2]}</code>" in (current / "preview.html").read_text()
    manifest = require_complete(current)
    assert manifest["version"] == versions[2] and manifest["formats"] == ["llava", "idefics", "hf"]
    assert set(manifest["files"]) == set(tree(Path(current))) - {MANIFEST}
    assert {"hf/README.md", "preview.html", "llava/leaky/train.json"} <= set(manifest["files"])
    for v in versions[1:]:  # the kept previous version is whole and loadable too
        assert leaky(release / "versions" / v / "hf", tmp_path / "cache") == metas[2]["counts"].value["hf"]["leaky"]


@pytest.mark.slow
def test_a_release_folder_from_before_versions_is_read_until_the_next_release_replaces_it(tmp_path):
    root = tmp_path / "storage"
    write_storage(UPath(root))
    legacy = root / NAME
    for rel in ("hf/README.md", "llava/leaky/train.json", "idefics/leaky/train-00000-of-00001.parquet",
                "preview.html"):
        (legacy / rel).parent.mkdir(parents=True, exist_ok=True)
        (legacy / rel).write_text("written before versions")
    assert current_release_path(UPath(root), NAME) == UPath(legacy)  # old layout: readers keep working
    version = released(materialize(local_storage(root), list(SHARDS)))["version"].value
    assert sorted(p.name for p in legacy.iterdir()) == [POINTER, "versions"]  # the stale copy is gone
    assert current_release_path(UPath(root), NAME) == UPath(legacy / "versions" / version)


@pytest.mark.slow
def test_the_pointer_and_retention_on_s3(s3_server, s3_bucket, tmp_path):
    name, client = s3_bucket
    opts = {"client_kwargs": {"endpoint_url": s3_server}, "key": "testing", "secret": "testing"}
    write_storage(UPath(f"s3://{name}/storage", **opts))
    storage = StorageResource(root=f"s3://{name}/storage", s3=S3Resource(endpoint_url=s3_server,
                                                                         region_name="us-east-1"))
    config = {"formats": ["hf"], "preview_per_mix": 1}
    metas = [released(materialize(storage, list(SHARDS), config)) for _ in range(3)]
    versions = [m["version"].value for m in metas]
    prefix = f"storage/{NAME}/"
    pointer = client.get_object(Bucket=name, Key=prefix + POINTER)["Body"].read()
    assert pointer == f"{versions[2]}\n".encode()
    objects = s3_objects(client, name, prefix)
    assert {k.split("/")[1] for k in objects if k.startswith("versions/")} == set(versions[1:])
    current = current_release_path(storage.root_path(), NAME)
    assert current.path == f"{name}/{prefix}versions/{versions[2]}"
    manifest = require_complete(current)
    assert {f"versions/{versions[2]}/{f}" for f in [*manifest["files"], MANIFEST]} == \
        {k for k in objects if k.startswith(f"versions/{versions[2]}/")}
    local = tmp_path / "current"
    copy_tree(current / "hf", UPath(local))
    assert leaky(local, tmp_path / "cache") == metas[2]["counts"].value["hf"]["leaky"]


@pytest.mark.slow
def test_only_a_complete_version_is_pushed_to_the_hub(tmp_path):
    root = tmp_path / "storage"
    write_storage(UPath(root))
    storage = local_storage(root)
    with HubDouble() as hub:
        target = {"push_to": "hf://datasets/viscon-org/viscon-100k"}
        hub_resource = HubResource(endpoint=hub.url, token="hf_test_token")
        first = released(materialize(storage, list(SHARDS), target, hub=hub_resource))
        version = first["version"].value
        current = current_release_path(UPath(root), NAME)
        assert len(hub.commits) == 1 and hub.unhandled == []
        assert hub.commits[0]["files"] == tree(Path(current) / "hf")  # the version's hf/, byte for byte
        assert hub.commits[0]["summary"] == f"Upload VisCon release {version}"
        assert f"Release version `{version}`" in hub.commits[0]["files"]["README.md"].decode()
        assert first["pushed_to"].value == target["push_to"]

        # a release that fails half-way (a shard's conversations file holds pages and mixes, so the split is
        # planned, but not the records, so the export stops at that shard): nothing is pushed
        before = tree(root / NAME)
        broken = pa.table({"doc_url": ["https://example.org/page/broken"], "mix": ["leaky"]})
        write_parquet(broken, UPath(root / "conversations" / f"{SHARDS[1]}.parquet"))
        failed = materialize(storage, list(SHARDS), target, hub=hub_resource)
        assert not failed.success
        assert len(hub.commits) == 1
        assert read_pointer(UPath(root / NAME)) == version
        assert {k: v for k, v in tree(root / NAME).items() if k == POINTER or k.startswith(f"versions/{version}/")} \
            == before
        (unfinished,) = set(list_versions(UPath(root / NAME))) - {version}
        assert not (root / NAME / "versions" / unfinished / MANIFEST).exists()
        assert (root / NAME / "versions" / unfinished / "llava").is_dir()  # it had begun writing
        with pytest.raises(IncompleteVersion):  # and pushing it by hand is refused
            push_release(UPath(root / NAME), unfinished, target["push_to"], endpoint=hub.url, token="t")
        assert len(hub.commits) == 1


# --- a release killed or cut off half-way ------------------------------------------------------------------


def add_bulk_shards(root: UPath, n: int, docs: int) -> list[str]:
    """`n` more shards of `docs` pages (2 images each), every stage's table: enough that a release writes
    for several seconds."""
    names = []
    for k in range(n):
        shard = f"bulk-{k}"
        rows = samples(docs, 2, shard, doc_offset=1000 + k * docs)
        write_images(root, rows)
        for folder, table in stage_tables(shard, rows).items():
            write_parquet(table, root / folder / f"{shard}.parquet")
        names.append(shard)
    return names


@pytest.mark.slow
def test_sigkill_mid_release_leaves_the_previous_release_current_whole_and_loadable(tmp_path):
    root = tmp_path / "storage"
    write_storage(UPath(root))
    storage = local_storage(root)
    first = released(materialize(storage, list(SHARDS)))
    version, release = first["version"].value, root / NAME
    before = tree(release)
    shards = [*SHARDS, *add_bulk_shards(UPath(root), 8, 60)]

    log = tmp_path / "child.log"
    child = subprocess.Popen([sys.executable, "-m", "tests.exports.release_child", root.as_uri(), *shards],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    started, written = time.monotonic(), None
    try:
        while written is None and child.poll() is None and time.monotonic() - started < 180:
            for v in set(os.listdir(release / "versions")) - {version}:
                formats = [release / "versions" / v / f for f in ("llava", "idefics", "hf")]
                if any(f.is_dir() and any(p.is_file() for p in f.rglob("*")) for f in formats):
                    written = v
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)  # as an OOM killer would: no cleanup runs
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert written is not None, f"the release never began writing a version: {log.read_text()[-2000:]}"
    assert child.returncode == -signal.SIGKILL  # killed mid-release, not finished

    assert not (release / "versions" / written / MANIFEST).exists()
    after = tree(release)
    assert {k: v for k, v in after.items() if not k.startswith(f"versions/{written}/")} == before
    current = current_release_path(UPath(root), NAME)
    assert Path(current) == release / "versions" / version
    assert leaky(Path(current) / "hf", tmp_path / "cache") == first["counts"].value["hf"]["leaky"]

    # the next release completes over the debris and becomes current; the killed one is left (it may
    # belong to a live writer for all a release can tell) until it is a day old
    rerun = released(materialize(storage, shards))
    assert read_pointer(UPath(release)) == rerun["version"].value
    assert rerun["kept_versions"].value == [rerun["version"].value, version]
    assert rerun["incomplete_versions"].value == [written]
    assert sum(rerun["counts"].value["hf"]["leaky"].values()) > sum(first["counts"].value["hf"]["leaky"].values())
    assert leaky(Path(current_release_path(UPath(root), NAME)) / "hf", tmp_path / "cache2") == \
        rerun["counts"].value["hf"]["leaky"]


@pytest.mark.slow
def test_s3_going_away_mid_release_leaves_the_previous_release_current_whole_and_loadable(s3_server, s3_bucket,
                                                                                          tmp_path):
    name, client = s3_bucket
    opts = {"client_kwargs": {"endpoint_url": s3_server}, "key": "testing", "secret": "testing"}
    write_storage(UPath(f"s3://{name}/storage", **opts))
    direct = StorageResource(root=f"s3://{name}/storage", s3=S3Resource(endpoint_url=s3_server,
                                                                        region_name="us-east-1"))
    first = released(materialize(direct, list(SHARDS)))
    version, prefix = first["version"].value, f"storage/{NAME}/"
    before = s3_objects(client, name, prefix)

    proxy = StoppingProxy(urlsplit(s3_server).port,
                          rb"PUT /" + name.encode() + b"/" + prefix.encode() + rb"versions/", stop_after=5)
    cut = StorageResource(root=f"s3://{name}/storage", s3=S3Resource(endpoint_url=proxy.endpoint,
                                                                     region_name="us-east-1"))
    result = materialize(cut, list(SHARDS))
    assert proxy.stopped.is_set() and not result.success

    after = s3_objects(client, name, prefix)
    (written,) = {k.split("/")[1] for k in after if k.startswith("versions/")} - {version}
    assert any(k.startswith(f"versions/{written}/") for k in after)  # it had begun writing
    assert f"versions/{written}/{MANIFEST}" not in after
    assert {k: v for k, v in after.items() if not k.startswith(f"versions/{written}/")} == before
    current = current_release_path(direct.root_path(), NAME)
    assert current.name == version
    local = tmp_path / "current"
    copy_tree(current / "hf", UPath(local))
    assert leaky(local, tmp_path / "cache") == first["counts"].value["hf"]["leaky"]
