"""Resume journal: the outcome of every fetched URL, appended as small parquet parts in the store.

Layout: `<store>/journal/images/<shard>/part-<run>-<seq>.parquet` (parts, because S3 objects cannot be
appended to). A rerun reads every part, reuses the outcomes made with the same normalisation
settings (`fingerprint`) and refetches only the missing and the transient ones (timeouts,
connection errors, 429, 5xx). Images are written before their journal rows, so a journal row never
points to a missing file; a part left unreadable by a crash is skipped (its URLs are refetched).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pyarrow as pa
from upath import UPath

from viscon_dagster.core.files.parquet import list_parquet, read_parquet, write_parquet

from .statuses import is_transient

OUTCOME_SCHEMA = pa.schema([
    ("image_url", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("http_status", pa.int32()),
    ("final_url", pa.string()),  # after redirects
    ("sha256", pa.string()),  # of the original bytes
    ("phash", pa.string()),  # imagehash.phash of the normalised image, 16 hex digits
    ("width", pa.int32()),  # after normalising
    ("height", pa.int32()),
    ("original_width", pa.int32()),  # as displayed (EXIF orientation applied)
    ("original_height", pa.int32()),
    ("original_format", pa.string()),
    ("bytes_in", pa.int64()),
    ("bytes_out", pa.int64()),
    ("path", pa.string()),  # normalised JPEG, relative to the store
    ("fingerprint", pa.string()),  # of the normalise settings the outcome was made with
])
"""One row per fetched image URL (a URL's outcome is the same for every document using it)."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name) or "_"


class ImageJournal:
    def __init__(self, store: UPath, shard: str, fingerprint: str):
        self.folder = store / "journal" / "images" / _safe(shard)
        self.fingerprint = fingerprint
        self._run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self._seq = 0
        self.unreadable_parts: list[str] = []

    def load(self) -> dict[str, dict[str, Any]]:
        """Done outcomes by image URL (later parts win); transient outcomes are left out."""
        done: dict[str, dict[str, Any]] = {}
        for part in list_parquet(self.folder):
            try:
                rows = read_parquet(part).to_pylist()
            except Exception:  # noqa: BLE001 - a part cut short by a crash: redo its URLs
                self.unreadable_parts.append(str(part))
                continue
            for row in rows:
                if row["fingerprint"] == self.fingerprint:
                    done[row["image_url"]] = row
        return {url: row for url, row in done.items() if not is_transient(row["status"])}

    def append(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self._seq += 1
        rows = [{**r, "fingerprint": self.fingerprint} for r in rows]
        table = pa.Table.from_pylist(rows, schema=OUTCOME_SCHEMA)
        write_parquet(table, self.folder / f"part-{self._run}-{self._seq:05d}.parquet")
