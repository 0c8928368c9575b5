"""Within-shard de-duplication and cross-shard frequent-URL counting (plain functions)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np


def _popcount(a: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(a)
    return np.unpackbits(a.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def find_duplicates(items: Sequence[tuple[str, str | None] | None], max_distance: int) -> list[str | None]:
    """For each item (sha256, phash hex) in priority order, the sha256 of the kept image it
    duplicates, or None when it is kept itself (or is None: no image).

    Exact duplicates share a sha256 of the original bytes; near duplicates have perceptual hashes
    within `max_distance` bits (disabled when negative). The first of a group is kept; a later
    image is compared with kept images only, so the result does not depend on fetch order.
    """
    kept: set[str] = set()
    hashes = np.zeros(len(items), dtype=np.uint64)  # phashes of kept images, first n used
    hash_sha: list[str] = []
    out: list[str | None] = []
    for item in items:
        if item is None:
            out.append(None)
            continue
        sha, phash = item
        if sha in kept:
            out.append(sha)
            continue
        h = np.uint64(int(phash, 16)) if phash else None
        n = len(hash_sha)
        if h is not None and max_distance >= 0 and n:
            distances = _popcount(hashes[:n] ^ h)
            nearest = int(np.argmin(distances))
            if distances[nearest] <= max_distance:
                out.append(hash_sha[nearest])
                continue
        kept.add(sha)
        if h is not None:
            hashes[n] = h
            hash_sha.append(sha)
        out.append(None)
    return out


def url_doc_counts(pairs: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Number of distinct documents per image URL from (doc_id, image_url) pairs."""
    docs: dict[str, set[str]] = defaultdict(set)
    for doc_id, url in pairs:
        docs[url].add(doc_id)
    return {url: len(d) for url, d in docs.items()}
