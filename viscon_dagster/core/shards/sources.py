"""Where source shards come from, and how one is read in record batches.

A source is a URL naming a folder of OBELICS-format parquet files:
- a local folder (`/data/obelics` or `file:///data/obelics`),
- an S3 prefix (`s3://bucket/obelics/`),
- the Hugging Face Hub (`hf://datasets/HuggingFaceM4/OBELICS/opt_out_docs_removed_2023_07_12`).
Each parquet file is one shard; its key (the Dagster partition key) is the file name without
`.parquet`. Local and S3 files stream through pyarrow; Hub files stream through `datasets`
(`load_dataset("parquet", data_files=…, streaming=True)`), the reader that also works on local
files, which is how it is tested without a network.

Before a shard is registered its parquet footer is read (`check_shard`): a file that is not parquet,
is truncated or lacks the OBELICS columns is refused with its reason instead of failing a run later.
The footer is read through fsspec for every source, `hf://` included (a range read through
`huggingface_hub`'s filesystem). Every read error names the shard's URL (`ShardReadError`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from viscon_dagster.core.documents.obelics import OBELICS_COLUMNS

OBELICS_HUB_SOURCE = "hf://datasets/HuggingFaceM4/OBELICS/opt_out_docs_removed_2023_07_12"


@dataclass(frozen=True)
class ShardRef:
    key: str
    url: str


class ShardReadError(RuntimeError):
    """A shard that cannot be read; the message names its URL."""


class ShardSourceNotFound(FileNotFoundError):
    """The source named for registration does not exist; the message says what was looked for."""


def shard_key(url: str) -> str:
    """Partition key of a shard file: its name without `.parquet`, limited to safe characters."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"\.parquet$", "", name)
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _as_upath(url: str, storage_options: dict[str, Any] | None) -> UPath:
    if is_local_url(url):  # by its path: UPath keeps a file URL's %-escapes (a folder with a space)
        return UPath(local_file(url)).absolute()
    return UPath(url, **(storage_options or {}))


def list_shards(source: str, storage_options: dict[str, Any] | None = None) -> list[ShardRef]:
    """Every `*.parquet` file directly under the source, sorted by key."""
    root = _as_upath(source, storage_options)
    if not root.exists():
        raise ShardSourceNotFound(
            f"no shard source at {source!r}: looked for {root} and found nothing there; give a folder of OBELICS "
            "parquet files, one such file, an s3://bucket/prefix or hf://datasets/<repo>/<folder>")
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


def is_local_url(url: str) -> bool:
    return "://" not in url or url.startswith(("file://", "local://"))


def local_file(url: str) -> str:
    """The path of a local shard URL (`file:///a%20b/x.parquet` -> `/a b/x.parquet`; a plain path as it is)."""
    return url2pathname(urlparse(url).path) if "://" in url else url


def reader_for(url: str) -> str:
    return "datasets" if url.startswith("hf://") else "pyarrow"


def _missing_columns(names: list[str] | None) -> list[str]:
    return [c for c in OBELICS_COLUMNS if names is not None and c not in names]


def check_shard(url: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """Why the shard cannot be used (not parquet, truncated, no OBELICS columns, unreadable), or None.
    Reads the parquet footer only."""
    try:  # a local file opened by its path: a path object costs more than reading the footer
        with (open(local_file(url), "rb") if is_local_url(url) else _as_upath(url, storage_options).open("rb")) as f:
            names = pq.ParquetFile(f).schema_arrow.names
    except Exception as e:  # whatever the filesystem or pyarrow raises, it is the reason
        return f"not a readable parquet file: {type(e).__name__}: {e}"
    missing = _missing_columns(names)
    return f"not an OBELICS shard: missing columns {missing}" if missing else None


def check_shards(refs: list[ShardRef], storage_options: dict[str, Any] | None = None,
                 workers: int = 16) -> dict[str, str]:
    """The reason each unusable shard is refused, by key. Remote footers are read in parallel threads (each a
    round trip); local ones in turn (a footer is ~0.1 ms of Python: threads only contend for the GIL, 4x slower)."""
    if not refs:
        return {}
    if all(is_local_url(r.url) for r in refs):
        return {r.key: why for r in refs if (why := check_shard(r.url, storage_options))}
    with ThreadPoolExecutor(max_workers=min(workers, len(refs)), thread_name_prefix="footer") as pool:
        reasons = pool.map(lambda r: check_shard(r.url, storage_options), refs)
        return {r.key: why for r, why in zip(refs, reasons) if why}


def iter_record_batches(url: str, storage_options: dict[str, Any] | None = None, batch_size: int = 1024,
                        reader: str | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a shard's OBELICS columns in batches of at most `batch_size` rows.

    The shard is opened and its first batch read before this returns, so a caller can open its
    outputs knowing that the source reads; any read error, then or later, is a ShardReadError."""
    reader = reader or reader_for(url)
    if reader not in _READERS:
        raise ValueError(f"unknown shard reader {reader!r} (use 'pyarrow' or 'datasets')")
    batches = _naming_errors(url, _READERS[reader](url, storage_options, batch_size))
    first = next(batches, None)
    return itertools.chain([] if first is None else [first], batches)


def _naming_errors(url: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except ShardReadError:
        raise
    except Exception as e:
        raise ShardReadError(f"cannot read shard {url}: {type(e).__name__}: {e}") from e


def _pyarrow_batches(url, storage_options, batch_size) -> Iterator[pa.RecordBatch]:
    path = _as_upath(url, storage_options)
    with path.open("rb") as f:
        pf = pq.ParquetFile(f)
        missing = _missing_columns(pf.schema_arrow.names)
        if missing:
            raise ShardReadError(f"{url} is not an OBELICS shard: missing columns {missing}")
        yield from pf.iter_batches(batch_size=batch_size, columns=OBELICS_COLUMNS)


def _datasets_batches(url, storage_options, batch_size) -> Iterator[pa.RecordBatch]:
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files={"train": [url]}, split="train", streaming=True,
                      storage_options=storage_options or None)
    missing = _missing_columns(ds.column_names)
    if missing:
        raise ShardReadError(f"{url} is not an OBELICS shard: missing columns {missing}")
    for batch in ds.select_columns(OBELICS_COLUMNS).iter(batch_size=batch_size):
        yield pa.RecordBatch.from_pydict(batch)


_READERS = {"pyarrow": _pyarrow_batches, "datasets": _datasets_batches}
