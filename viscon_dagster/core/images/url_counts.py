"""Cross-shard URL -> document counts, in a hash-bucketed index whose reads per shard do not grow with
the number of shards (the frequent-URL flags of the `images` stage need the counts of every other shard).

Layout under `<store>/url_doc_index/`:
- `b<NNN>/base.parquet`: the compacted bucket, rows (`url`, `shard`, `version`, `doc_count`); URLs are
  spread over `BUCKETS` buckets by a stable hash.
- `b<NNN>/deltas/<version>.parquet`: one shard's rows for the bucket as it saved them (`url`, `doc_count`;
  the shard and its version in the file's metadata). A shard's newest version wins, so a rerun replaces
  what it saved before and is never counted twice.
- `shards/<shard>.json`: the buckets a shard's last save touched, so a rerun that no longer uses a URL
  writes an empty delta there and its old rows stop counting.

A load reads, per bucket holding one of the shard's URLs, the base and that bucket's deltas: at most
`BUCKETS x (COMPACT_AT + concurrent writers)` files, whatever the number of shards. A save writes its
deltas and, where a bucket has `COMPACT_AT` deltas or more, folds them into the base under a lease on the
bucket (core/files/lease.py; a bucket being compacted by another writer is skipped, its deltas wait). The
base is published whole (core/files/atomic.py) before the deltas it merged are deleted; a reader that
meets a delta deleted under it reads the bucket again (the new base holds it). Versions order writes of
one shard (time in ns, then a random suffix); two saves of one shard at once are kept apart by the run
queue (one run per partition), and the later version wins either way.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from upath import UPath

from viscon_dagster.core.files.atomic import write_text_atomic
from viscon_dagster.core.files.lease import LeaseHeld, PartitionLease, default_owner
from viscon_dagster.core.files.parquet import list_parquet, write_parquet

from .journal import _safe

URL_INDEX_DIR = "url_doc_index"
BUCKETS = 64
COMPACT_AT = 8  # deltas in a bucket before a save folds them into its base
DELTA_SCHEMA = pa.schema([("url", pa.string()), ("doc_count", pa.int32())])
BASE_SCHEMA = pa.schema([("url", pa.string()), ("shard", pa.string()), ("version", pa.string()),
                         ("doc_count", pa.int32())])
_RETRIES = 5


def bucket_of(url: str, buckets: int | None = None) -> int:
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "big") % (buckets or BUCKETS)


def _bucket_dir(store: UPath, bucket: int) -> UPath:
    return store / URL_INDEX_DIR / f"b{bucket:03d}"


def url_counts_path(store: UPath, shard: str) -> UPath:
    """The shard's entry in the index: the manifest of the buckets its last save touched."""
    return store / URL_INDEX_DIR / "shards" / f"{_safe(shard)}.json"


_manifest = url_counts_path


def _new_version() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _read_delta(path: UPath) -> pa.Table:
    """A delta as base rows (its shard and version from the file's metadata)."""
    with path.open("rb") as f:
        t = pq.read_table(f)
    meta = t.schema.metadata or {}
    shard, version = meta[b"shard"].decode(), meta[b"version"].decode()
    n = t.num_rows
    return pa.table({"url": t.column("url"), "shard": pa.array([shard] * n, pa.string()),
                     "version": pa.array([version] * n, pa.string()), "doc_count": t.column("doc_count")},
                    schema=BASE_SCHEMA).replace_schema_metadata({"shard": shard, "version": version})


def _read_base(path: UPath) -> pa.Table:
    try:
        with path.open("rb") as f:
            return pq.read_table(f).cast(BASE_SCHEMA)
    except FileNotFoundError:
        return BASE_SCHEMA.empty_table()


def _winners(tables: list[pa.Table], empty_versions: dict[str, str]) -> pa.Table:
    """Rows of each shard's newest version only. `empty_versions`: versions of empty deltas (a shard
    that saved nothing in this bucket), which still supersede its older rows."""
    rows = pa.concat_tables([t.replace_schema_metadata(None) for t in tables]) if tables \
        else BASE_SCHEMA.empty_table()
    newest: dict[str, str] = dict(empty_versions)
    if rows.num_rows:
        for shard, version in zip(*(c.to_pylist() for c in
                                    rows.group_by("shard").aggregate([("version", "max")]).columns), strict=True):
            if version > newest.get(shard, ""):
                newest[shard] = version
    if not rows.num_rows:
        return rows
    keep = pc.equal(rows.column("version"),
                    pa.array([newest[s] for s in rows.column("shard").to_pylist()], pa.string()))
    return rows.filter(keep)


def _read_bucket(store: UPath, bucket: int) -> tuple[pa.Table, list[UPath]]:
    """The bucket's current rows (newest version per shard) and the delta files they came from."""
    folder = _bucket_dir(store, bucket)
    for _ in range(_RETRIES):
        deltas = list_parquet(folder / "deltas")
        base = _read_base(folder / "base.parquet")
        try:
            parts = [_read_delta(p) for p in deltas]
        except FileNotFoundError:  # compacted under us: the new base holds it
            continue
        empty = {t.schema.metadata[b"shard"].decode(): t.schema.metadata[b"version"].decode()
                 for t in parts if t.num_rows == 0}
        return _winners([base, *parts], empty), deltas
    raise RuntimeError(f"the URL count bucket {folder} kept changing while it was read ({_RETRIES} tries)")


def _compact(store: UPath, bucket: int) -> bool:
    """Fold the bucket's deltas into its base, unless another writer is doing it. Returns whether it did."""
    folder = _bucket_dir(store, bucket)
    lease = PartitionLease(folder / "compaction.lease.json", owner=default_owner(),
                           subject=f"URL count bucket {bucket}", ttl_s=300, wait_s=0)
    try:
        lease.acquire()
    except LeaseHeld:
        return False
    try:
        rows, merged = _read_bucket(store, bucket)
        if merged:
            write_parquet(rows.cast(BASE_SCHEMA), folder / "base.parquet")
            for p in merged:
                p.unlink(missing_ok=True)
        return True
    finally:
        lease.release()


def save_url_doc_counts(store: UPath, shard: str, counts: Mapping[str, int]) -> UPath:
    """Record `shard`'s URL document counts (replacing what it saved before); returns its manifest."""
    version = _new_version()
    by_bucket: dict[int, dict[str, int]] = {}
    for url, n in counts.items():
        by_bucket.setdefault(bucket_of(url), {})[url] = n
    manifest = _manifest(store, shard)
    try:
        before = set(json.loads(manifest.read_text())["buckets"])
    except FileNotFoundError:
        before = set()
    for bucket in sorted(before | set(by_bucket)):
        rows = by_bucket.get(bucket, {})
        table = pa.table({"url": list(rows), "doc_count": list(rows.values())}, schema=DELTA_SCHEMA)
        write_parquet(table.replace_schema_metadata({"shard": shard, "version": version}),
                      _bucket_dir(store, bucket) / "deltas" / f"{version}.parquet")
    write_text_atomic(manifest, json.dumps({"shard": shard, "version": version, "buckets": sorted(by_bucket)}))
    for bucket in sorted(before | set(by_bucket)):
        if len(list_parquet(_bucket_dir(store, bucket) / "deltas")) >= COMPACT_AT:
            _compact(store, bucket)
    return manifest


def load_url_doc_counts(store: UPath, exclude_shards: Iterable[str] = (),
                        only_urls: Collection[str] | None = None) -> dict[str, int]:
    """Summed counts over every saved shard except `exclude_shards` (pass the shard being run), for
    `only_urls` (pass the shard's image URLs; None: every URL). Reads only the buckets of `only_urls`."""
    excluded = pa.array(sorted(set(exclude_shards)), pa.string())
    buckets = range(BUCKETS) if only_urls is None else sorted({bucket_of(u) for u in only_urls})
    wanted = pa.array(list(only_urls), pa.string()) if only_urls is not None else None
    total: Counter[str] = Counter()
    for bucket in buckets:
        rows, _ = _read_bucket(store, bucket)
        rows = rows.filter(pc.invert(pc.is_in(rows.column("shard"), value_set=excluded)))
        if wanted is not None:
            rows = rows.filter(pc.is_in(rows.column("url"), value_set=wanted))
        for url, n in zip(rows.column("url").to_pylist(), rows.column("doc_count").to_pylist(), strict=True):
            total[url] += n
    return dict(total)
