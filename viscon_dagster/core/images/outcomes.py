"""A URL's outcome row, where its image is stored, and the one failure of a shard: what the parent of a run and its
worker processes share (the parent needs nothing of the fetching and decoding code)."""

from __future__ import annotations

from typing import Any

from .journal import OUTCOME_SCHEMA

MAX_ERROR_CHARS = 300
_FIELDS = tuple(n for n in OUTCOME_SCHEMA.names if n != "fingerprint")  # the journal adds the fingerprint


class ImageStorageError(RuntimeError):
    """The store could not be written: a systemic fault that fails the shard."""


def image_path(sha256: str) -> str:
    return f"images/{sha256[:2]}/{sha256}.jpg"


def outcome(url: str, **values: Any) -> dict[str, Any]:
    row = dict.fromkeys(_FIELDS)
    row.update(image_url=url, bytes_in=0)
    row.update(values)
    if row["error"] and len(row["error"]) > MAX_ERROR_CHARS:  # e.g. aiohttp quoting a whole bad response
        row["error"] = row["error"][:MAX_ERROR_CHARS] + "…"
    return row
