"""Where source shards come from, and how one is read in record batches.

A source is a URL naming a folder of OBELICS-format parquet files:
- a local folder (`/data/obelics` or `file:///data/obelics`),
- an S3 prefix (`s3://bucket/obelics/`),
- the Hugging Face Hub (`hf://datasets/HuggingFaceM4/OBELICS/opt_out_docs_removed_2023_07_12`).
Each parquet file is one shard; its key (the Dagster partition key) is the file name without
`.parquet`. Local and S3 files stream through pyarrow; Hub files stream through `datasets`
(`load_dataset("parquet", data_files=…, streaming=True)`), the reader that also works on local
files, which is how it is tested without a network.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from viscon_dagster.core.obelics import OBELICS_COLUMNS

OBELICS_HUB_SOURCE = "hf://datasets/HuggingFaceM4/OBELICS/opt_out_docs_removed_2023_07_12"


@dataclass(frozen=True)
class ShardRef:
    key: str
    url: str


def shard_key(url: str) -> str:
    """Partition key of a shard file: its name without `.parquet`, limited to safe characters."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"\.parquet$", "", name)
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _as_upath(url: str, storage_options: dict[str, Any] | None) -> UPath:
    if "://" not in url:
        return UPath(url).absolute()
    return UPath(url, **(storage_options or {}))


def list_shards(source: str, storage_options: dict[str, Any] | None = None) -> list[ShardRef]:
    """Every `*.parquet` file directly under the source, sorted by key."""
    root = _as_upath(source, storage_options)
    if root.is_file():
        files = [root]
    else:
        files = [p for p in root.iterdir() if p.name.endswith(".parquet")]
    refs = [ShardRef(shard_key(str(p)), _url_of(p)) for p in files]
    keys = [r.key for r in refs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"two shard files in {source} map to the same key")
    return sorted(refs, key=lambda r: r.key)


def _url_of(p: UPath) -> str:
    s = str(p)
    return s if "://" in s else p.absolute().as_uri()


def reader_for(url: str) -> str:
    return "datasets" if url.startswith("hf://") else "pyarrow"


def iter_record_batches(url: str, storage_options: dict[str, Any] | None = None, batch_size: int = 1024,
                        reader: str | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a shard's OBELICS columns in batches of at most `batch_size` rows."""
    reader = reader or reader_for(url)
    if reader == "pyarrow":
        yield from _pyarrow_batches(url, storage_options, batch_size)
    elif reader == "datasets":
        yield from _datasets_batches(url, storage_options, batch_size)
    else:
        raise ValueError(f"unknown shard reader {reader!r} (use 'pyarrow' or 'datasets')")


def _pyarrow_batches(url, storage_options, batch_size) -> Iterator[pa.RecordBatch]:
    path = _as_upath(url, storage_options)
    with path.open("rb") as f:
        pf = pq.ParquetFile(f)
        missing = [c for c in OBELICS_COLUMNS if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(f"{url} is not an OBELICS shard: missing columns {missing}")
        yield from pf.iter_batches(batch_size=batch_size, columns=OBELICS_COLUMNS)


def _datasets_batches(url, storage_options, batch_size) -> Iterator[pa.RecordBatch]:
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files={"train": [url]}, split="train", streaming=True,
                      storage_options=storage_options or None)
    missing = [c for c in OBELICS_COLUMNS if ds.column_names is not None and c not in ds.column_names]
    if missing:
        raise ValueError(f"{url} is not an OBELICS shard: missing columns {missing}")
    for batch in ds.select_columns(OBELICS_COLUMNS).iter(batch_size=batch_size):
        yield pa.RecordBatch.from_pydict(batch)
