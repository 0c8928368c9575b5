"""When the store fails mid-shard, the first failure is the one reported (with its "a rerun resumes" hint),
and what the store holds afterwards is whole: moto's S3 behind a proxy that stops mid-run, a local
folder that cannot be written, and the images asset through Dagster."""

from __future__ import annotations

import dataclasses
import io
from urllib.parse import urlsplit

import dagster as dg
import pytest
from PIL import Image
from upath import UPath

from tests.conftest import materialize_partition
from tests.images.s3_proxy import StoppingProxy
from viscon_dagster.core.images import ImageRequest, ImageStorageError, fetch_images
from viscon_dagster.definitions import build_definitions
from viscon_dagster.environment import image_fetcher
from viscon_dagster.resources.shard_source import record_shards

HINT = "a rerun resumes from the journal"


def reqs(urls):
    return [ImageRequest(f"d{i}", f"https://example.org/d{i}", 0, u) for i, u in enumerate(urls)]


def one_run_one_flush(settings):
    """Settings whose only journal flush is the last one, so the first storage failure is an image write."""
    return dataclasses.replace(settings, journal_flush_rows=10_000, journal_flush_s=3600, concurrency=2)


def store_at(endpoint: str, bucket: str) -> UPath:
    return UPath(f"s3://{bucket}/store", key="testing", secret="testing",
                 config_kwargs={"retries": {"max_attempts": 1}},  # fail fast once the store is gone
                 client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})


def test_s3_going_away_mid_shard_reports_the_first_failure(server, settings, bucket):
    name, s3, endpoint, _ = bucket
    proxy = StoppingProxy(urlsplit(endpoint).port, rb"PUT /" + name.encode() + rb"/store/images/", stop_after=2)
    urls = [server.url(f"/img/p2{i}.jpg") for i in range(6)]
    s = one_run_one_flush(settings)
    with pytest.raises(ImageStorageError) as failed:
        fetch_images(reqs(urls), store_at(proxy.endpoint, name), s, shard="s3-down")
    assert proxy.stopped.is_set(), failed.value
    message = str(failed.value)
    assert message.startswith("cannot write images to the store at ") and message.endswith(HINT + ".")
    assert any(n.startswith("Then the last journal flush failed too: cannot write the image journal")
               for n in failed.value.__notes__)

    # what the store holds: the images written before it went away (two, and any whose answer was cut),
    # each whole; no journal part (the last flush failed)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix="store/").get("Contents", [])]
    assert len(keys) >= 2 and all(k.startswith("store/images/") for k in keys)
    for key in keys:
        Image.open(io.BytesIO(s3.get_object(Bucket=name, Key=key)["Body"].read())).load()

    again = fetch_images(reqs(urls), store_at(endpoint, name), s, shard="s3-down")  # the store is back
    assert again.status_counts == {"ok": 6} and again.urls_resumed == 0  # nothing was journaled: all redone
    stored = {o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix="store/images/")["Contents"]}
    assert stored == {f"store/{p}" for p in again.table.column("path").to_pylist()}


def test_unwritable_local_store_reports_the_image_write_first(server, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    s = dataclasses.replace(one_run_one_flush(settings), concurrency=1)  # the 404's row is pending first
    with pytest.raises(ImageStorageError, match=f"cannot write images to the store .*{HINT}") as failed:
        fetch_images(reqs([server.url("/status/404"), server.url("/img/p20.jpg")]), UPath(blocker), s)
    assert len(failed.value.__notes__) == 1 and "cannot write the image journal" in failed.value.__notes__[0]
    assert blocker.read_text() == "x"


@pytest.mark.slow
def test_images_asset_fails_with_the_first_cause(tmp_path, sample_dir, tokenizer_dir):
    root = tmp_path / "store"
    defs = build_definitions(storage_root=root.as_uri(), tokenizer=str(tokenizer_dir),
                             fetcher=image_fetcher(allowed_file_roots=[str(sample_dir / "images")]))
    key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
    for blocked in ("images", "journal"):  # both image files and the journal cannot be written
        (root / blocked).write_text("not a folder")
    with dg.instance_for_test() as instance:
        result = materialize_partition(defs, ["filtered_docs", "images"], key, instance, raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "images"
    cause = failure.step_failure_data.error.cause
    assert cause.cls_name == "ImageStorageError"
    assert cause.message.startswith("viscon_dagster.core.images.outcomes.ImageStorageError: cannot write images")
    assert HINT in cause.message  # the journal flush that failed after it is only a note
