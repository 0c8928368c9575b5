"""The hash-bucketed URL count index against the design it replaced (every shard's file read by every
other shard): the same counts and frequent-URL flags over 40 shards with reruns, locally and on S3 (moto's
server on loopback); reads per load that do not grow with the number of shards; concurrent saves."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from upath import UPath

from viscon_dagster.core.images import url_counts
from viscon_dagster.core.images.dedup import url_doc_counts
from viscon_dagster.core.images.url_counts import load_url_doc_counts, save_url_doc_counts

FREQUENT_URL_DOCS = 10  # ImageSettings.frequent_url_docs


def read_all_reference(saved: dict[str, dict[str, int]], shard: str, only_urls) -> dict[str, int]:
    """The replaced design: sum every other shard's saved counts."""
    total: Counter[str] = Counter()
    for other, counts in saved.items():
        if other != shard:
            total.update({u: n for u, n in counts.items() if u in only_urls})
    return dict(total)


def frequent(shard_counts: dict[str, int], seen: dict[str, int]) -> set[str]:
    return {u for u, c in shard_counts.items() if c + seen.get(u, 0) > FREQUENT_URL_DOCS}


def shard_counts(rng: random.Random, shard: int) -> dict[str, int]:
    """A shard's (doc, image URL) pairs: site logos shared by many shards, the rest mostly its own."""
    pairs = [(f"doc-{shard}-{d}", f"https://site{rng.randrange(30)}.example/logo.png")
             for d in range(rng.randrange(5, 15))]
    pairs += [(f"doc-{shard}-{rng.randrange(40)}", f"https://img.example/{shard}/{rng.randrange(60)}.jpg")
              for _ in range(rng.randrange(30, 80))]
    pairs += [(f"doc-{shard}-{rng.randrange(40)}", f"https://cdn.example/shared/{rng.randrange(200)}.jpg")
              for _ in range(20)]
    return url_doc_counts(pairs)


def run_40_shards(store: UPath, monkeypatch, check_every: int = 1, buckets: int = 8) -> None:
    monkeypatch.setattr(url_counts, "COMPACT_AT", 4)  # compaction happens many times over 40 shards
    monkeypatch.setattr(url_counts, "BUCKETS", buckets)  # fewer files per load: the test's time, not its reach
    rng = random.Random(11)
    saved: dict[str, dict[str, int]] = {}
    order = [f"shard-{i:02d}" for i in range(40)]
    order += rng.sample(order, 8)  # reruns: the shard's new counts replace its old ones
    for step, shard in enumerate(order):
        counts = shard_counts(rng, step)
        if step % check_every == 0 or shard in saved:
            seen = load_url_doc_counts(store, exclude_shards=[shard], only_urls=set(counts))
            assert seen == read_all_reference(saved, shard, set(counts)), (step, shard)
            assert frequent(counts, seen) == frequent(counts, read_all_reference(saved, shard, set(counts)))
        save_url_doc_counts(store, shard, counts)
        saved[shard] = counts
    everything = Counter()
    for counts in saved.values():
        everything.update(counts)
    assert load_url_doc_counts(store) == dict(everything)
    assert any(frequent(c, read_all_reference(saved, s, set(c))) for s, c in saved.items())  # the test flags some


@pytest.mark.slow
def test_the_index_matches_the_read_all_design_on_40_local_shards(tmp_path, monkeypatch):
    run_40_shards(UPath(tmp_path / "store"), monkeypatch)


@pytest.mark.slow
def test_the_index_matches_the_read_all_design_on_40_s3_shards(s3_server, s3_bucket, monkeypatch):
    name, _ = s3_bucket
    store = UPath(f"s3://{name}/viscon", endpoint_url=s3_server, key="testing", secret="testing")
    # each S3 request costs: 2 buckets, compared on every 10th shard and on reruns
    run_40_shards(store, monkeypatch, check_every=10, buckets=2)


def test_reads_per_load_do_not_grow_with_the_number_of_shards(tmp_path, monkeypatch):
    """A spy on the two ways the index reads files: files read for one shard's load, after 10 and after
    60 saved shards, stay within what the buckets touched allow (not one per shard)."""
    monkeypatch.setattr(url_counts, "BUCKETS", 8)
    store = UPath(tmp_path / "store")
    reads = Counter()
    for name in ("_read_delta", "_read_base"):
        real = getattr(url_counts, name)
        monkeypatch.setattr(url_counts, name, lambda p, real=real, name=name: (reads.update([name]), real(p))[1])
    probe = {f"https://site{i}.example/logo.png": 1 for i in range(8)}

    def reads_after(shards: int) -> int:
        for i in range(shards):
            save_url_doc_counts(store, f"s{i:03d}", {**probe, f"https://own/{i}.jpg": 1})
        reads.clear()
        seen = load_url_doc_counts(store, exclude_shards=["probe"], only_urls=set(probe))
        assert seen == {u: shards for u in probe}
        return sum(reads.values())

    small, large = reads_after(10), reads_after(60)
    buckets_touched = len({url_counts.bucket_of(u, 8) for u in probe})
    assert large <= buckets_touched * (1 + url_counts.COMPACT_AT)  # base + the deltas not compacted yet
    assert large <= small + buckets_touched * url_counts.COMPACT_AT


def test_concurrent_saves_lose_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(url_counts, "COMPACT_AT", 2)  # writers compact while others write and read
    monkeypatch.setattr(url_counts, "BUCKETS", 4)
    store = UPath(tmp_path / "store")
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for i in range(6):
                save_url_doc_counts(store, f"w{w}-{i}", {"https://shared/logo.png": 1, f"https://own/{w}/{i}": 2})
                load_url_doc_counts(store, only_urls={"https://shared/logo.png"})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    counts = load_url_doc_counts(store)
    assert counts["https://shared/logo.png"] == 36
    assert sum(1 for u in counts if u.startswith("https://own/")) == 36


@pytest.mark.parametrize("rerun", [{"https://a/x.jpg": 1}, {}])
def test_a_rerun_that_drops_urls_stops_counting_them(tmp_path, rerun):
    store = UPath(tmp_path / "store")
    save_url_doc_counts(store, "s1", {"https://a/x.jpg": 3, "https://b/y.jpg": 2})
    save_url_doc_counts(store, "s1", rerun)
    assert load_url_doc_counts(store) == rerun
