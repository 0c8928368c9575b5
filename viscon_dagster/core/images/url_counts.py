"""Persisted URL -> document-count tables, one parquet per shard, for cross-shard frequent-URL flags.

`<store>/url_doc_counts/<shard>.parquet` with columns `url` (string), `doc_count` (int32): the number
of documents of that shard using the image URL. The counts "seen so far" for a shard are the sum
over every other shard's file, so rerunning a shard never counts it twice. Only the URLs the shard
itself uses are summed (`only_urls`): memory follows the shard, not the corpus. Each shard still reads
every other shard's file (N reads per shard over a backfill of N).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping

import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from viscon_dagster.core.files.parquet import list_parquet, read_parquet, write_parquet

from .journal import _safe

URL_COUNTS_DIR = "url_doc_counts"
URL_COUNTS_SCHEMA = pa.schema([("url", pa.string()), ("doc_count", pa.int32())])


def url_counts_path(store: UPath, shard: str) -> UPath:
    return store / URL_COUNTS_DIR / f"{_safe(shard)}.parquet"


def save_url_doc_counts(store: UPath, shard: str, counts: Mapping[str, int]) -> UPath:
    path = url_counts_path(store, shard)
    table = pa.table({"url": list(counts.keys()), "doc_count": list(counts.values())}, schema=URL_COUNTS_SCHEMA)
    write_parquet(table, path)
    return path


def load_url_doc_counts(store: UPath, exclude_shards: Iterable[str] = (),
                        only_urls: Collection[str] | None = None) -> dict[str, int]:
    """Summed counts over every saved shard except `exclude_shards` (pass the shard being run), for
    `only_urls` (pass the shard's image URLs; None: every URL)."""
    excluded = {url_counts_path(store, s).name for s in exclude_shards}
    wanted = pa.array(list(only_urls), pa.string()) if only_urls is not None else None
    total: Counter[str] = Counter()
    for part in list_parquet(store / URL_COUNTS_DIR):
        if part.name in excluded:
            continue
        t = read_parquet(part)
        if wanted is not None:
            t = t.filter(pc.is_in(t.column("url"), value_set=wanted))
        for url, n in zip(t.column("url").to_pylist(), t.column("doc_count").to_pylist(), strict=True):
            total[url] += n
    return dict(total)
