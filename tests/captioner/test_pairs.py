"""The split check: a page or an image in both splits fails it; the builder keeps held-out images out of train."""

from __future__ import annotations

import pyarrow as pa

from viscon_dagster.checks.captioner_checks import check_split
from viscon_dagster.core.captioner.pairs import PAIRS_SCHEMA, leaks
from viscon_dagster.core.exports.split import split_for


def pair(doc_url: str, sha: str, split: str) -> dict:
    return {"shard": "s0", "doc_id": doc_url, "doc_url": doc_url, "position": 0, "image_sha256": sha,
            "image_path": f"images/{sha}.jpg", "split": split, "system": "sys", "prompt": "p",
            "caption": "a caption long enough", "teacher": "t", "prompt_version": "v", "fingerprint": sha + doc_url}


def test_split_check_fails_on_a_leaked_fixture():
    clean = pa.Table.from_pylist([pair("https://a", "1", "train"), pair("https://b", "2", "test")],
                                 schema=PAIRS_SCHEMA)
    assert check_split(clean, "captioner_training_pairs").passed
    image_leak = pa.Table.from_pylist([pair("https://a", "1", "train"), pair("https://b", "1", "test")],
                                      schema=PAIRS_SCHEMA)
    page_leak = pa.Table.from_pylist([pair("https://a", "1", "train"), pair("https://a", "2", "test")],
                                     schema=PAIRS_SCHEMA)
    assert leaks(image_leak) == {"image_sha256": ["1"], "doc_url": []}
    assert leaks(page_leak) == {"image_sha256": [], "doc_url": ["https://a"]}
    for leaked in (image_leak, page_leak):
        result = check_split(leaked, "captioner_training_pairs")
        assert not result.passed


def test_held_out_split_is_the_release_split():
    # the same function and defaults as the release: a page's split never depends on the captioner
    assert {split_for(f"https://example.org/{i}") for i in range(400)} == {"train", "test"}
