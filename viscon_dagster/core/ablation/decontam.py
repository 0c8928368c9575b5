"""Decontamination: no training sample may share an image or a question with a benchmark item.

A training record (one conversation of one mix) is dropped when
* its image is a benchmark image: the same bytes (`same_image`, sha256) or a perceptual hash within
  `max_distance` bits (`near_image`; imagehash's pHash of the decoded image, shrunk as core/images does, so a
  resized or re-encoded copy still matches);
* one of its questions (every human turn, the options and the MCQ instruction left out) is a benchmark question
  once normalised (`same_question`: NFKC, case-folded, punctuation and spacing collapsed);
* optionally, one of its questions is an embedding near-duplicate of a benchmark question (`similar_question`,
  cosine ≥ a threshold, the same sentence embedder as the Q&A dedup).
Records on held-out pages (benchmark.HoldOut) go first (`holdout_shard`, `test_page`): no mix trains on them.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import imagehash
import numpy as np
import pyarrow as pa
from PIL import Image

from viscon_dagster.core.chain.conversations import CONVERSATIONS_SCHEMA, IMAGE_TOKEN, MCQ_INSTRUCTION

SAME_IMAGE, NEAR_IMAGE, SAME_QUESTION, SIMILAR_QUESTION = "same_image", "near_image", "same_question", \
    "similar_question"
CONTAMINATION = (SAME_IMAGE, NEAR_IMAGE, SAME_QUESTION, SIMILAR_QUESTION)
DEFAULT_MAX_DISTANCE = 4  # bits of a 64-bit pHash, the images stage's near-duplicate distance
_OPTION_LINE = re.compile(r"^\s*[A-D]\s*[.):]\s")
_PUNCTUATION = re.compile(r"[^\w\s]")

MIX_SCHEMA = pa.schema([
    ("id", pa.string()), ("mix", pa.string()), ("content", pa.string()), ("shard", pa.string()),
    ("doc_id", pa.string()), ("doc_url", pa.string()), ("image", pa.string()), ("image_sha256", pa.string()),
    ("image_phash", pa.string()), ("question_hashes", pa.list_(pa.string())),
    ("conversations", CONVERSATIONS_SCHEMA.field("conversations").type),
])
DROPPED_SCHEMA = pa.schema([
    ("id", pa.string()), ("mix", pa.string()), ("shard", pa.string()), ("doc_url", pa.string()),
    ("image_sha256", pa.string()), ("reason", pa.string()), ("benchmark_item", pa.string()), ("detail", pa.string()),
])


def normalise_question(text: str) -> str:
    """The question alone, comparable across formats: no `<image>`, no `A. …` option lines, no MCQ instruction;
    NFKC, case-folded, punctuation as spaces, spacing collapsed."""
    text = unicodedata.normalize("NFKC", text or "").replace(IMAGE_TOKEN, " ")
    lines = [line for line in text.splitlines()
             if not _OPTION_LINE.match(line) and line.strip() != MCQ_INSTRUCTION]
    return " ".join(_PUNCTUATION.sub(" ", " ".join(lines).casefold()).split())


def question_hash(text: str) -> str:
    return hashlib.sha256(normalise_question(text).encode()).hexdigest()[:32]


def human_questions(conversations: Iterable[dict]) -> list[str]:
    return [t["value"] for t in conversations if t["from"] == "human"]


def phash_of(data: bytes) -> str:
    """pHash (16 hex digits) of an image's pixels, as core/images/normalise.py computes it."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        factor = max(1, min(im.size) // 128)
        return str(imagehash.phash(im.reduce(factor) if factor > 1 else im))


def image_phashes(paths: Iterable[str], read: Callable[[str], bytes], workers: int = 8) -> dict[str, str | None]:
    """path → pHash of the image there (None when it is missing or unreadable), read `workers` at a time."""
    def one(path: str) -> str | None:
        try:
            return phash_of(read(path))
        except Exception:  # noqa: BLE001 - a missing or undecodable image has no hash; its record is kept as is
            return None

    unique = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(unique, pool.map(one, unique)))


@dataclass(frozen=True)
class Match:
    reason: str
    item_id: str
    detail: str | None = None


class BenchmarkIndex:
    """The benchmark's images and questions, to look training samples up in.

    `max_distance` < 0 turns off the perceptual-hash match (the sha256 one stays); `match_questions=False` turns
    off the question match; `embeddings` (L2-normalised rows, one per item) with `embedding_threshold` turns on
    the near-duplicate question match (`embed` must then embed the training questions the same way)."""

    def __init__(self, items: pa.Table, *, max_distance: int = DEFAULT_MAX_DISTANCE, match_questions: bool = True,
                 embeddings: np.ndarray | None = None, embedding_threshold: float | None = None):
        rows = items.select(["item_id", "image_sha256", "image_phash", "question_hash"]).to_pylist()
        self.ids = [r["item_id"] for r in rows]
        self.by_sha: dict[str, str] = {}  # each image and question names the first item that has it
        self.by_question: dict[str, str] = {}
        for r in rows:
            self.by_sha.setdefault(r["image_sha256"], r["item_id"])
            if match_questions:
                self.by_question.setdefault(r["question_hash"], r["item_id"])
        with_phash = [r for r in rows if r["image_phash"]]
        self.phashes = np.array([int(r["image_phash"], 16) for r in with_phash], dtype=np.uint64)
        self.phash_ids = [r["item_id"] for r in with_phash]
        self.max_distance = max_distance
        self.embeddings = embeddings
        self.embedding_threshold = embedding_threshold
        if (embeddings is None) != (embedding_threshold is None):
            raise ValueError("embeddings and embedding_threshold go together")

    def image_match(self, sha256: str | None, phash: str | None) -> Match | None:
        if sha256 and sha256 in self.by_sha:
            return Match(SAME_IMAGE, self.by_sha[sha256])
        if phash and self.max_distance >= 0 and len(self.phashes):
            distances = np.bitwise_count(self.phashes ^ np.uint64(int(phash, 16)))
            nearest = int(np.argmin(distances))
            if distances[nearest] <= self.max_distance:
                return Match(NEAR_IMAGE, self.phash_ids[nearest], f"pHash distance {int(distances[nearest])}")
        return None

    def question_match(self, hashes: Iterable[str]) -> Match | None:
        for h in hashes:
            if h in self.by_question:
                return Match(SAME_QUESTION, self.by_question[h])
        return None

    def embedding_match(self, vectors: np.ndarray) -> Match | None:
        """The closest benchmark question over the threshold among `vectors` (one record's questions)."""
        if self.embeddings is None or not len(vectors) or not len(self.embeddings):
            return None
        sims = vectors @ self.embeddings.T
        i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
        if sims[i, j] >= self.embedding_threshold:
            return Match(SIMILAR_QUESTION, self.ids[j], f"cosine {float(sims[i, j]):.3f}")
        return None


@dataclass
class ShardResult:
    kept: list[dict[str, Any]] = field(default_factory=list)  # MIX_SCHEMA rows
    dropped: list[dict[str, Any]] = field(default_factory=list)  # DROPPED_SCHEMA rows
    counts: Counter = field(default_factory=Counter)  # (mix, reason) → records dropped


def decontaminate(records: Iterable[dict], index: BenchmarkIndex, holdout_reason: Callable[[str, str], str | None],
                  phashes: dict[str, str | None], embed: Callable[[list[str]], np.ndarray] | None = None
                  ) -> ShardResult:
    """Split one shard's conversation records (CONVERSATIONS_SCHEMA rows) into kept and dropped.

    `holdout_reason(shard, doc_url)` names why a page is held out (or None); `phashes` maps each record's image
    path to its pHash; `embed` embeds normalised questions when the index matches embeddings."""
    records = list(records)
    result = ShardResult()
    vectors: dict[str, np.ndarray] = {}
    if embed is not None and index.embeddings is not None:
        texts = sorted({normalise_question(q) for r in records for q in human_questions(r["conversations"])})
        vectors = dict(zip(texts, embed(texts))) if texts else {}
    for r in records:
        questions = human_questions(r["conversations"])
        hashes = [question_hash(q) for q in questions]
        phash = phashes.get(r["image"])
        held = holdout_reason(r["shard"], r["doc_url"])
        match = None
        if held is None:
            match = index.image_match(r["image_sha256"], phash) or index.question_match(hashes)
            if match is None and vectors:
                match = index.embedding_match(np.stack([vectors[normalise_question(q)] for q in questions]))
        if held is not None or match is not None:
            reason = held or match.reason
            result.dropped.append({"id": r["id"], "mix": r["mix"], "shard": r["shard"], "doc_url": r["doc_url"],
                                   "image_sha256": r["image_sha256"], "reason": reason,
                                   "benchmark_item": match.item_id if match else None,
                                   "detail": match.detail if match else None})
            result.counts[(r["mix"], reason)] += 1
            continue
        result.kept.append({"id": r["id"], "mix": r["mix"], "content": r["content"], "shard": r["shard"],
                            "doc_id": r["doc_id"], "doc_url": r["doc_url"], "image": r["image"],
                            "image_sha256": r["image_sha256"], "image_phash": phash, "question_hashes": hashes,
                            "conversations": r["conversations"]})
    return result


def remaining_matches(kept: Iterable[dict], index: BenchmarkIndex) -> list[tuple[str, Match]]:
    """(record id, match) for every written training record that still matches a benchmark item by image or by
    question (what the blocking check runs on the published mixes, with the default, strict index)."""
    found = []
    for r in kept:
        match = index.image_match(r["image_sha256"], r["image_phash"]) or index.question_match(r["question_hashes"])
        if match is not None:
            found.append((r["id"], match))
    return found
