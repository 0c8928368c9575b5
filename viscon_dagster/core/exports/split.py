"""Train/test split by a seeded hash of the page URL: every sample of a page lands in the same split,
and the assignment never changes with reruns, row order or the other pages in the run."""

from __future__ import annotations

import hashlib

SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.05


def split_for(doc_url: str, test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0) -> str:
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    h = hashlib.sha256(f"{seed}:{doc_url}".encode()).digest()
    return "test" if int.from_bytes(h[:8], "big") / 2**64 < test_fraction else "train"
