"""Parsing and validating OBELICS records (one row = one interleaved web document).

A record has `texts` and `images` lists of equal length (exactly one non-null per position),
`metadata` (JSON list aligned with the positions; a dict per image) and `general_metadata`
(JSON dict with the page `url`). `parse_record` turns a raw row into a `Doc` or a `Reject`
with a reason from `REJECT_REASONS`, so no row is ever dropped without a recorded cause.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

END_MARKER = "END_OF_DOCUMENT_TOKEN_TO_BE_REPLACED"
OBELICS_COLUMNS = ["texts", "images", "metadata", "general_metadata"]

# Reasons a row can be rejected (schema problems first, then content filters).
SCHEMA_REASONS = (
    "bad_schema",                  # texts/images missing or not lists
    "length_mismatch",             # len(texts) != len(images)
    "both_text_and_image",         # a position holds both a text and an image
    "empty_position",              # a position holds neither
    "invalid_metadata_json",       # metadata is not a JSON list
    "metadata_length_mismatch",    # metadata list not aligned with positions
    "invalid_general_metadata_json",
    "missing_url",                 # general_metadata has no page url
)
FILTER_REASONS = ("no_image", "too_few_images", "no_text", "too_many_tokens", "duplicate_url")
REJECT_REASONS = SCHEMA_REASONS + FILTER_REASONS


@dataclass
class Reject:
    reason: str
    detail: str


@dataclass
class ImageInfo:
    position: int
    url: str
    src: str | None
    alt_text: str | None
    original_width: int | None
    original_height: int | None


@dataclass
class Doc:
    """A valid document: positions renumbered after dropping texts emptied by the marker strip."""

    url: str
    texts: list[str | None]
    images: list[str | None]
    image_info: list[ImageInfo]
    general_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def doc_id(self) -> str:
        return doc_id_for(self.url)

    @property
    def text(self) -> str:
        """The page text in reading order, one paragraph per text position."""
        return "\n\n".join(t for t in self.texts if t is not None)

    def content_hash(self) -> str:
        payload = json.dumps([self.texts, self.images], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


def doc_id_for(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:20]


def strip_marker(text: str) -> str:
    return text.replace(END_MARKER, "").strip()


def _parse_json(raw: Any) -> Any:
    if isinstance(raw, (list, dict)):
        return raw
    if raw is None:
        raise ValueError("null")
    return json.loads(raw)


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def parse_record(row: dict[str, Any]) -> Doc | Reject:
    texts, images = row.get("texts"), row.get("images")
    if not isinstance(texts, list) or not isinstance(images, list):
        return Reject("bad_schema", f"texts is {type(texts).__name__}, images is {type(images).__name__}")
    if len(texts) != len(images):
        return Reject("length_mismatch", f"{len(texts)} texts vs {len(images)} images")
    for i, (t, im) in enumerate(zip(texts, images)):
        if t is not None and im is not None:
            return Reject("both_text_and_image", f"position {i}")
        if t is None and im is None:
            return Reject("empty_position", f"position {i}")

    try:
        meta = _parse_json(row.get("metadata"))
    except (ValueError, TypeError) as e:
        return Reject("invalid_metadata_json", str(e)[:200])
    if not isinstance(meta, list) or len(meta) != len(texts):
        n = len(meta) if isinstance(meta, list) else type(meta).__name__
        return Reject("metadata_length_mismatch", f"metadata has {n} entries for {len(texts)} positions")

    try:
        general = _parse_json(row.get("general_metadata"))
    except (ValueError, TypeError) as e:
        return Reject("invalid_general_metadata_json", str(e)[:200])
    url = general.get("url") if isinstance(general, dict) else None
    if not url or not isinstance(url, str):
        return Reject("missing_url", "general_metadata has no url")

    out_texts: list[str | None] = []
    out_images: list[str | None] = []
    infos: list[ImageInfo] = []
    for t, im, m in zip(texts, images, meta):
        if t is not None:
            t = strip_marker(t)
            if not t:  # a text that was only the end marker or whitespace
                continue
        elif im is not None:
            m = m if isinstance(m, dict) else {}
            infos.append(ImageInfo(len(out_images), im, m.get("src"), m.get("alt_text") or None,
                                   _as_int(m.get("original_width")), _as_int(m.get("original_height"))))
        out_texts.append(t)
        out_images.append(im)
    return Doc(url=url, texts=out_texts, images=out_images, image_info=infos, general_metadata=general)
