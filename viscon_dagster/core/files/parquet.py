"""Parquet files on a `UPath` (local or S3), the one way every layer reads and writes them.

Every write publishes whole (`core/files/atomic.py`): a reader sees the previous file or the new one,
never a torn one, and a writer that fails or is killed leaves the previous file in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from viscon_dagster.core.files.atomic import AtomicFile, is_temp_name


def partition_file(root: UPath, key_path: Sequence[str], partition: str) -> UPath:
    """`<root>/<asset key path>/<partition>.parquet`: where an asset partition's table lives (the layout
    Dagster's `UPathIOManager` uses, so assets that read a table themselves find what the IO manager wrote)."""
    return root.joinpath(*key_path, f"{partition}.parquet")


def write_parquet(table: pa.Table, path: UPath) -> None:
    with AtomicFile(path, sweep=True) as f:
        pq.write_table(table, f, compression="zstd")


def read_parquet(path: UPath) -> pa.Table:
    with path.open("rb") as f:
        return pq.read_table(f)


def list_parquet(folder: UPath) -> list[UPath]:
    """The `*.parquet` files directly in `folder`, by name; none when the folder does not exist."""
    try:
        return sorted((p for p in folder.iterdir() if p.name.endswith(".parquet") and not is_temp_name(p.name)),
                      key=lambda p: p.name)
    except (FileNotFoundError, NotADirectoryError):  # UPath on S3 says NotADirectory for a missing prefix
        return []


class ParquetStreamWriter:
    """Append row batches to one parquet file in storage as they come, without holding them.

    Rows stream to a temp file (local) or an upload (S3, multipart past the block size) that
    `close()` publishes whole; leaving the `with` block on an exception, or `abort()`, drops them and
    the previous file stays. After `close()` the file exists, with the schema even when no row was
    written, so a reader never has to tell "no rows" from "not produced".
    """

    def __init__(self, path: UPath, schema: pa.Schema):
        self.path, self.schema, self.rows = path, schema, 0
        self._out = AtomicFile(path, sweep=True)
        try:
            self._writer = pq.ParquetWriter(self._out.file, schema, compression="zstd")
        except BaseException:
            self._out.abort()
            raise

    def write(self, rows: list[dict]) -> None:
        if rows:
            self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
            self.rows += len(rows)

    def close(self) -> None:
        try:
            self._writer.close()  # the footer
        except BaseException:
            self._out.abort()
            raise
        self._out.commit()

    def abort(self) -> None:
        try:
            self._out.abort()
        finally:
            try:
                self._writer.close()  # its footer goes nowhere: the sink is already gone
            except Exception:  # noqa: BLE001 - expected: writing to the abandoned sink fails
                pass
            self._writer.is_open = False  # or pyarrow retries the close when collected

    def __enter__(self) -> ParquetStreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
