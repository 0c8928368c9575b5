"""Image acquisition (stage 3 of the pipeline) in plain Python: fetch, guard, normalise, dedup, resume.

Entry point: `fetch_images(requests, store, settings, seen_url_counts, *, shard) -> ImageResult`
(signature, outputs and failure modes in `acquire`'s docstring). Modules: `settings` (every knob),
`statuses` (the status set), `safety` (SSRF and file-root guards), `robots` (robots.txt and
X-Robots-Tag), `fetch` (async HTTP, file://, s3://), `normalise` (Pillow), `dedup`, `journal`
(resume), `url_counts` (cross-shard URL document counts).
"""

from .acquire import (
    RESULT_SCHEMA,
    ImageRequest,
    ImageResult,
    ImageStorageError,
    afetch_images,
    fetch_images,
    image_path,
)
from .settings import ImageSettings
from .statuses import KEPT_STATUS, KNOWN_STATUSES, STATUS_REGEX, is_known_status
from .url_counts import load_url_doc_counts, save_url_doc_counts, url_counts_path

__all__ = [
    "KEPT_STATUS", "KNOWN_STATUSES", "RESULT_SCHEMA", "STATUS_REGEX", "ImageRequest", "ImageResult",
    "ImageSettings", "ImageStorageError", "afetch_images", "fetch_images", "image_path", "is_known_status",
    "load_url_doc_counts", "save_url_doc_counts", "url_counts_path",
]
