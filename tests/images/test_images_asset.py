"""images materialized through Dagster on the sample: every trap ends in its status, reruns resume."""

from collections import Counter

import dagster as dg
import pytest

from tests.conftest import materialize_partition
from viscon_dagster.definitions import build_definitions
from viscon_dagster.environment import image_fetcher
from viscon_dagster.resources.shard_source import record_shards


def fetch_shard(tmp_path, tokenizer_dir, shards, runs: int = 1, **fetcher_settings):
    """Materialize filtered_docs + images for the first shard of `shards`, `runs` times."""
    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir),
                             fetcher=image_fetcher(**fetcher_settings))
    key = record_shards(defs.resources["storage"], str(shards))[0]
    with dg.instance_for_test() as instance:
        return [materialize_partition(defs, ["filtered_docs", "images"], key, instance) for _ in range(runs)]


def images_metadata(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("images")[0].metadata.items()}


@pytest.mark.slow
def test_images_asset_statuses_checks_and_resume(tmp_path, sample_dir, tokenizer_dir):
    first, second = fetch_shard(tmp_path, tokenizer_dir, sample_dir / "shards", runs=2,
                                allowed_file_roots=[str(sample_dir / "images")])
    assert first.success and second.success
    md = images_metadata(first)
    statuses = Counter(md["status_counts"])
    assert statuses["ok"] > 20
    assert {"duplicate", "not_found", "not_image", "too_small"} <= set(statuses)
    checks = {c.check_name: c.passed for c in first.get_asset_check_evaluations()}
    assert checks == {"filtered_docs_suite": True, "images_suite": True, "images_success_rate": True}
    again = images_metadata(second)
    assert again["urls_fetched"] == 0 and again["urls_resumed"] == md["urls_fetched"]
    assert again["status_counts"] == md["status_counts"]


@pytest.mark.slow
def test_sample_urls_resolve_only_under_the_allowed_roots(tmp_path, sample_dir, tokenizer_dir):
    # the sample names its images relative to the roots it is served from (file:<name>): under another root
    # they are simply not there, and nothing reads the sample's folder
    (result,) = fetch_shard(tmp_path, tokenizer_dir, sample_dir / "shards",
                            allowed_file_roots=[str(tmp_path / "elsewhere")])
    md = images_metadata(result)
    assert set(md["status_counts"]) == {"not_found"}
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["images_success_rate"] is False  # a warning, not a failed run


@pytest.mark.slow
def test_images_over_http_from_a_loopback_server(tmp_path, tokenizer_dir):
    """The sample's images served by a real HTTP server on 127.0.0.1 (allow-listed past the SSRF guard)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from tests.conftest import free_port
    from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample

    port = free_port()
    write_sample(tmp_path / "web", SampleSpec(shards=1, docs_per_shard=6, seed=3,
                                              image_base_url=f"http://127.0.0.1:{port}/images/"))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path / "web"))
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (result,) = fetch_shard(tmp_path, tokenizer_dir, tmp_path / "web" / "shards", allowed_hosts=["127.0.0.1"])
    finally:
        server.shutdown()
    md = images_metadata(result)
    statuses = Counter(md["status_counts"])
    assert statuses["ok"] > 5 and statuses["http_404"] == 1 and statuses["not_image"] == 1
    assert statuses["duplicate"] == 1 and statuses["too_small"] >= 1
    assert md["requests_made"] >= md["urls_fetched"]


@pytest.mark.slow
def test_counts_from_other_shards_flag_frequent_urls(tmp_path, sample_dir, tokenizer_dir):
    """A URL another shard already used in many documents is flagged here; this shard's own earlier
    counts are not added twice on a rerun, and the other shard's unrelated URLs are not loaded."""
    import pyarrow.parquet as pq
    from upath import UPath

    from viscon_dagster.core.images.url_counts import load_url_doc_counts, save_url_doc_counts

    defs = build_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir),
                             fetcher=image_fetcher(allowed_file_roots=[str(sample_dir / "images")]))
    key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
    store = UPath(tmp_path / "store")
    with dg.instance_for_test() as instance:
        assert materialize_partition(defs, ["filtered_docs", "images"], key, instance).success
        table = pq.read_table(next((tmp_path / "store").rglob(f"images/{key}*.parquet")))
        rows = table.to_pylist()
        ok = next(r for r in rows if r["status"] == "ok")
        own = ok["url_doc_count"]
        save_url_doc_counts(store, "another-shard", {ok["image_url"]: 10, "https://unrelated/x.jpg": 99})
        assert materialize_partition(defs, ["images"], key, instance).success
    rows = pq.read_table(next((tmp_path / "store").rglob(f"images/{key}*.parquet"))).to_pylist()
    flagged = [r for r in rows if r["image_url"] == ok["image_url"]]
    assert flagged and all(r["status"] == "frequent_url" and r["url_doc_count"] == own + 10 for r in flagged)
    assert load_url_doc_counts(store, exclude_shards=[key], only_urls={ok["image_url"]}) == {ok["image_url"]: 10}
