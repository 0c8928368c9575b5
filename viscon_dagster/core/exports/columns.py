"""The lineage columns every format of a release carries beside the conversation (the card describes them).

Inside the pipeline an image is known by `image_sha256`, the SHA-256 of the bytes fetched from its source (also the
name of its file). A release ships a re-encoded JPEG, so it names the two hashes apart: `source_sha256` (the
pipeline's `image_sha256`) and `shipped_sha256` (the SHA-256 of the very bytes the release ships).
"""

from __future__ import annotations

import hashlib
from typing import Any

RELEASE_LINEAGE = ("shard", "doc_id", "doc_url", "image_url", "source_sha256", "shipped_sha256", "caption_model",
                   "qa_model", "caption_prompt_version", "qa_prompt_version")


def shipped_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def release_lineage(row: dict[str, Any], shipped: str) -> dict[str, Any]:
    """A conversation row with the release's hash columns: its `image_sha256` as `source_sha256`, and `shipped`."""
    out = {k: v for k, v in row.items() if k != "image_sha256"}
    out["source_sha256"], out["shipped_sha256"] = row["image_sha256"], shipped
    return out
