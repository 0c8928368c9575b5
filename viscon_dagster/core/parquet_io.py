"""Parquet files on a `UPath` (local or S3), the one way every layer reads and writes them."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath


def is_local(path: UPath) -> bool:
    return path.protocol in ("", "file", "local")


def write_parquet(table: pa.Table, path: UPath) -> None:
    if is_local(path):  # object stores have no folders to make
        path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pq.write_table(table, f, compression="zstd")


def read_parquet(path: UPath) -> pa.Table:
    with path.open("rb") as f:
        return pq.read_table(f)


def list_parquet(folder: UPath) -> list[UPath]:
    """The `*.parquet` files directly in `folder`, by name; none when the folder does not exist."""
    try:
        return sorted((p for p in folder.iterdir() if p.name.endswith(".parquet")), key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):  # UPath on S3 says NotADirectory for a missing prefix
        return []
