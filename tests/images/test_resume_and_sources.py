"""Resume from the journal, file:// roots, s3:// sources and stores, frequent URLs, storage faults."""

from __future__ import annotations

import dataclasses
import os

import pytest
from upath import UPath

from viscon_dagster.core.images import (
    ImageRequest,
    ImageSettings,
    ImageStorageError,
    fetch_images,
    load_url_doc_counts,
    save_url_doc_counts,
)


def reqs(urls, doc="d"):
    return [ImageRequest(f"{doc}{i}", f"https://example.org/{doc}{i}", i, u) for i, u in enumerate(urls)]


def test_rerun_does_not_refetch_done_urls(server, settings, tmp_path):
    server.reset()
    store = UPath(tmp_path)
    paths = [f"/img/p2{i}.jpg" for i in range(6)] + ["/status/404", "/status/500"]
    urls = [server.url(p) for p in paths]
    first = fetch_images(reqs(urls[:4]), store, settings, shard="s1")  # a partly fetched shard
    assert first.status_counts == {"ok": 4}
    second = fetch_images(reqs(urls), store, settings, shard="s1")
    assert second.urls_resumed == 4 and second.urls_fetched == 4
    for p in paths[:6] + ["/status/404"]:
        assert server.hits[p] == 1, p  # done once, never again
    assert server.hits["/status/500"] == 2  # one retry in this run
    rows = {r["image_url"]: r for r in second.table.to_pylist()}
    assert all(rows[u]["from_journal"] for u in urls[:4]) and not rows[urls[4]]["from_journal"]
    assert rows[urls[0]]["sha256"] == first.table.column("sha256")[0].as_py()

    third = fetch_images(reqs(urls), store, settings, shard="s1")
    assert server.hits["/status/500"] == 4  # a transient failure is retried on a rerun ...
    assert server.hits["/status/404"] == 1  # ... a final one is not
    assert third.requests_made == 3 and third.urls_fetched == 1  # robots.txt once per run, 2 attempts
    assert third.table.column("status").to_pylist() == second.table.column("status").to_pylist()


@pytest.mark.slow
def test_interrupted_run_keeps_what_it_finished(server, settings, tmp_path):
    """A run cancelled mid-shard (e.g. a terminated Dagster run) journals its finished URLs."""
    import asyncio

    from viscon_dagster.core.images import afetch_images

    server.reset()
    store = UPath(tmp_path)
    fast = [server.url(f"/sleep/0/fast{i}") for i in range(4)]
    slow = [server.url(f"/sleep/4000/slow{i}") for i in range(2)]
    s = dataclasses.replace(settings, read_timeout_s=5, total_timeout_s=10)
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(afetch_images(reqs(fast + slow), store, s, shard="cut"), 1.5))
    result = fetch_images(reqs(fast + slow), store, s, shard="cut")
    assert result.urls_resumed == 4 and result.status_counts == {"ok": 1, "duplicate": 5}
    assert all(server.hits[f"/sleep/0/fast{i}"] == 1 for i in range(4))
    assert all(server.hits[f"/sleep/4000/slow{i}"] == 2 for i in range(2))


def test_journal_is_per_shard_and_per_normalise_settings(server, settings, tmp_path):
    server.reset()
    store = UPath(tmp_path)
    urls = [server.url("/img/p20.jpg")]
    fetch_images(reqs(urls), store, settings, shard="a")
    fetch_images(reqs(urls), store, settings, shard="b")
    assert server.hits["/img/p20.jpg"] == 2
    other = dataclasses.replace(settings, max_side=256)
    result = fetch_images(reqs(urls), store, other, shard="a")
    assert server.hits["/img/p20.jpg"] == 3 and result.table.column("width")[0].as_py() == 256


def test_crashed_journal_part_is_skipped(server, settings, tmp_path):
    store = UPath(tmp_path)
    urls = [server.url("/img/p21.jpg")]
    fetch_images(reqs(urls), store, settings, shard="c")
    (store / "journal/images/c/part-zzz-00001.parquet").write_bytes(b"PAR1 cut short")
    server.reset()
    result = fetch_images(reqs(urls), store, settings, shard="c")
    assert server.hits["/img/p21.jpg"] == 0 and len(result.unreadable_journal_parts) == 1


def test_file_urls_only_inside_allowed_roots(server, settings, tmp_path):
    root, outside = tmp_path / "sample", tmp_path / "elsewhere"
    root.mkdir(), outside.mkdir()
    data = server.images["p25.jpg"][0]
    (root / "a.jpg").write_bytes(data)
    (outside / "b.jpg").write_bytes(data)
    os.symlink(outside / "b.jpg", root / "link.jpg")  # a link out of the root is outside
    urls = [(root / "a.jpg").as_uri(), (outside / "b.jpg").as_uri(), (root / "link.jpg").as_uri(),
            (root / "missing.jpg").as_uri(), (root / "../elsewhere/b.jpg").as_uri()]
    store = UPath(tmp_path / "store")
    refused = fetch_images(reqs(urls), store, settings, shard="f0")
    assert set(refused.table.column("status").to_pylist()) == {"blocked_scheme"}
    allowed = dataclasses.replace(settings, allowed_file_roots=(str(root),))
    statuses = fetch_images(reqs(urls), store, allowed, shard="f1").table.column("status").to_pylist()
    assert statuses == ["ok", "blocked_path", "blocked_path", "not_found", "blocked_path"]
    as_uri = dataclasses.replace(settings, allowed_file_roots=(root.as_uri(),))
    assert fetch_images(reqs(urls[:1]), store, as_uri, shard="f2").status_counts == {"ok": 1}
    # relative file URLs (how the sample names its images) are looked up under each allowed root in turn
    second = tmp_path / "second"
    second.mkdir()
    (second / "c.jpg").write_bytes(server.images["p24.jpg"][0])
    two_roots = dataclasses.replace(settings, allowed_file_roots=(str(root), second.as_uri()))
    relative = ["file:a.jpg", "file:c.jpg", "file:missing.jpg", "file:../elsewhere/b.jpg", "file:link.jpg"]
    statuses = fetch_images(reqs(relative), store, two_roots, shard="f3").table.column("status").to_pylist()
    assert statuses == ["ok", "ok", "not_found", "blocked_path", "blocked_path"]


def test_other_schemes_and_bad_urls(settings, tmp_path):
    urls = ["ftp://example.org/a.jpg", "data:image/png;base64,AAAA", "", "not a url", "javascript:alert(1)",
            "http://127.0.0.1:99999/a.jpg", "http:///a.jpg"]
    result = fetch_images(reqs(urls), UPath(tmp_path), settings)
    assert result.table.column("status").to_pylist() == [
        "blocked_scheme", "blocked_scheme", "invalid_url", "invalid_url", "blocked_scheme", "invalid_url",
        "invalid_url"]


def test_frequent_urls_are_flagged_and_not_fetched(server, settings, tmp_path):
    server.reset()
    store = UPath(tmp_path)
    logo, photo = server.url("/img/p22.jpg"), server.url("/img/p23.jpg")
    requests = [ImageRequest(f"doc{i}", "https://example.org", 0, logo) for i in range(3)]
    requests.append(ImageRequest("doc0", "https://example.org", 1, photo))
    save_url_doc_counts(store, "shard-0", {logo: 8, photo: 1})
    save_url_doc_counts(store, "shard-1", {logo: 5})  # the shard being rerun: not counted
    seen = load_url_doc_counts(store, exclude_shards=["shard-1"])
    assert seen == {logo: 8, photo: 1}
    # what a shard loads is limited to its own URLs
    assert load_url_doc_counts(store, only_urls={logo, "https://elsewhere/x.jpg"}) == {logo: 13}
    assert load_url_doc_counts(store, exclude_shards=["shard-1"], only_urls=set()) == {}
    result = fetch_images(requests, store, settings, seen, shard="shard-1")
    assert result.url_doc_counts == {logo: 3, photo: 1}
    assert result.table.column("status").to_pylist() == ["frequent_url"] * 3 + ["ok"]
    assert result.table.column("url_doc_count").to_pylist() == [11, 11, 11, 2]
    assert server.hits["/img/p22.jpg"] == 0
    save_url_doc_counts(store, "shard-1", result.url_doc_counts)
    assert load_url_doc_counts(store) == {logo: 11, photo: 2}


def test_same_url_in_two_documents_is_fetched_once(server, settings, tmp_path):
    server.reset()
    url = server.url("/img/p24.jpg")
    result = fetch_images(reqs([url, url]), UPath(tmp_path), settings)
    assert server.hits["/img/p24.jpg"] == 1
    assert result.table.column("status").to_pylist() == ["ok", "duplicate"]


def test_process_pool_gives_the_same_result(server, settings, tmp_path):
    urls = [server.url("/img/good.png"), server.url("/img/cmyk.jpg")]
    threads = fetch_images(reqs(urls), UPath(tmp_path / "a"), dataclasses.replace(settings, cpu_pool="thread"))
    procs = fetch_images(reqs(urls), UPath(tmp_path / "b"), dataclasses.replace(settings, cpu_pool="process"))
    for col in ("status", "sha256", "phash", "width", "height"):
        assert threads.table.column(col).to_pylist() == procs.table.column(col).to_pylist()


def test_storage_failure_fails_the_shard_clearly(server, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ImageStorageError, match="cannot write"):
        fetch_images(reqs([server.url("/img/p20.jpg")]), UPath(blocker), settings)


def test_s3_store_and_s3_sources(server, settings, bucket):
    name, s3, _, options = bucket
    s3.put_object(Bucket=name, Key="src/a.jpg", Body=server.images["p21.jpg"][0])
    store = UPath(f"s3://{name}/store", **options)
    s = dataclasses.replace(settings, s3_storage_options=options)
    urls = [f"s3://{name}/src/a.jpg", f"s3://{name}/src/missing.jpg", server.url("/img/p22.jpg")]
    server.reset()
    result = fetch_images(reqs(urls), store, s, shard="s3")
    assert result.table.column("status").to_pylist() == ["ok", "not_found", "ok"]
    for path in result.table.column("path").to_pylist():
        if path:
            head = s3.head_object(Bucket=name, Key=f"store/{path}")
            assert head["ContentLength"] > 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=name, Prefix="store/journal/")["Contents"]]
    assert keys and all(k.startswith("store/journal/images/s3/part-") for k in keys)
    again = fetch_images(reqs(urls), store, s, shard="s3")  # resume from the journal on S3
    assert again.urls_resumed == 3 and again.requests_made == 0 and server.hits["/img/p22.jpg"] == 1


def test_s3_store_down_fails_the_shard(server, settings, moto_s3):
    _, options = moto_s3
    store = UPath("s3://no-such-bucket-here/store", **options)
    with pytest.raises(ImageStorageError):
        fetch_images(reqs([server.url("/img/p20.jpg")]), store, settings)


@pytest.mark.slow
def test_url_counts_on_s3_are_summed_across_many_shards(s3_server, s3_bucket):
    """The per-shard count files on a real S3-protocol server."""
    name, _ = s3_bucket
    store = UPath(f"s3://{name}/store", key="testing", secret="testing",
                  client_kwargs={"endpoint_url": s3_server})
    for i in range(40):
        save_url_doc_counts(store, f"shard-{i:02d}", {"https://a/logo.png": 1, f"https://a/{i}.jpg": 2})
    assert load_url_doc_counts(store, exclude_shards=["shard-07"], only_urls={"https://a/logo.png", "https://a/7.jpg",
                                                                           "https://a/8.jpg"}) == {
        "https://a/logo.png": 39, "https://a/8.jpg": 2}
    assert len(load_url_doc_counts(store)) == 41


def test_auto_pool_uses_processes_for_big_runs_only():
    from viscon_dagster.core.images.acquire import cpu_pool_kind
    from viscon_dagster.core.images.settings import PROCESS_POOL_MIN_URLS

    auto = ImageSettings()
    assert auto.cpu_pool == "auto"
    assert cpu_pool_kind(auto, PROCESS_POOL_MIN_URLS) == "process"
    assert cpu_pool_kind(auto, PROCESS_POOL_MIN_URLS - 1) == "thread"
    assert cpu_pool_kind(dataclasses.replace(auto, cpu_pool="thread"), 10**6) == "thread"
    assert cpu_pool_kind(dataclasses.replace(auto, cpu_pool="process"), 1) == "process"
    with pytest.raises(ValueError, match="cpu_pool"):
        ImageSettings(cpu_pool="fork")


@pytest.mark.slow
def test_big_run_in_the_default_process_pool_matches_threads(server, settings, tmp_path):
    """From PROCESS_POOL_MIN_URLS URLs on, the default decodes in processes: same rows as in threads."""
    from viscon_dagster.core.images.settings import PROCESS_POOL_MIN_URLS

    names = ["good.jpg", "good.png", "good.webp", "anim.gif", "cmyk.jpg", "rgba.png", "palette.png", "big.jpg",
             "tiny.png", "wide.png", "bomb.png", "html_as.jpg"]
    urls = [server.url(f"/img/{n}") for n in names]
    urls += [server.url(f"/copy/p2{i % 6}.jpg?n={i}") for i in range(PROCESS_POOL_MIN_URLS)]
    auto = dataclasses.replace(settings, cpu_pool=ImageSettings().cpu_pool)
    procs = fetch_images(reqs(urls), UPath(tmp_path / "a"), auto)
    threads = fetch_images(reqs(urls), UPath(tmp_path / "b"), dataclasses.replace(settings, cpu_pool="thread"))
    for col in ("status", "sha256", "phash", "width", "height", "path"):
        assert procs.table.column(col).to_pylist() == threads.table.column(col).to_pylist(), col
    assert procs.status_counts["ok"] == 8 + 6 and procs.status_counts["duplicate"] == PROCESS_POOL_MIN_URLS - 6
    assert {"too_small", "bad_aspect", "decompression_bomb", "not_image"} <= set(procs.status_counts)
    assert all((tmp_path / "a" / p).exists() for p in procs.table.column("path").to_pylist() if p)
