"""Stage 2: filter one shard's documents, streaming over record batches.

Each batch is parsed (`obelics.parse_record`), its valid documents are token-counted in one
batched tokenizer call, and the survivors compete for `docs_per_shard` places by a seeded hash of
the page URL — a bounded heap, so memory stays flat however large the shard. Rejected rows go to
`on_reject` as soon as they are seen (the caller streams them to storage); nothing is dropped
without a reason, and the kept set does not depend on row order.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from viscon_dagster.core.documents.obelics import Doc, Reject, parse_record

# Counts text tokens for a batch of texts (a real tokenizer behind it; see resources/tokenizer.py).
TokenCounter = Callable[[list[str]], list[int]]

IMAGE_INFO_TYPE = pa.struct([
    ("position", pa.int32()), ("url", pa.string()), ("src", pa.string()), ("alt_text", pa.string()),
    ("original_width", pa.int64()), ("original_height", pa.int64()),
])
FILTERED_DOCS_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("shard", pa.string()), ("row_index", pa.int64()), ("url", pa.string()),
    ("texts", pa.list_(pa.string())), ("images", pa.list_(pa.string())),
    ("image_info", pa.list_(IMAGE_INFO_TYPE)), ("n_images", pa.int32()), ("n_texts", pa.int32()),
    ("text_tokens", pa.int32()), ("sample_rank", pa.string()), ("general_metadata", pa.string()),
])


@dataclass(frozen=True)
class FilterSettings:
    max_text_tokens: int = 2000
    min_images: int = 1
    docs_per_shard: int = 1000
    seed: int = 0


@dataclass
class FilterStats:
    rows_in: int = 0
    valid: int = 0
    eligible: int = 0
    kept: int = 0
    rejects: Counter = field(default_factory=Counter)

    @property
    def not_sampled(self) -> int:
        """Eligible documents that lost the seeded draw for the shard's places."""
        return self.eligible - self.kept


def sample_rank(url: str, seed: int) -> str:
    """Seeded, row-order-independent rank of a page; the smallest ranks are kept."""
    return hashlib.sha256(f"{seed}:{url}".encode()).hexdigest()


@dataclass
class _Prepared:
    """A parsed batch: rows already rejected, and candidates awaiting their token counts."""

    rejects: list[dict] = field(default_factory=list)
    candidates: list[tuple[int, dict, Doc]] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [doc.text for _, _, doc in self.candidates]


@dataclass
class _Entry:
    """A document in the draw, kept with its source row in case it turns out to be a duplicate."""

    index: int
    raw: dict
    doc: Doc
    n_tokens: int
    rank: str


class ShardFilter:
    """`prepare` each record batch, `finish` it with its token counts (in order), then take `result`."""

    def __init__(self, shard: str, settings: FilterSettings, on_reject: Callable[[list[dict[str, Any]]], None]):
        self.shard, self.settings, self.on_reject = shard, settings, on_reject
        self.stats = FilterStats()
        # A max-heap on rank (heapq is a min-heap, hence the negation): the k smallest ranks so far.
        self._heap: list[tuple[int, int, _Entry]] = []
        self._drawn: dict[str, _Entry] = {}  # url -> its entry, for documents now in the heap
        # 64-bit digests, not the URLs: memory stays small however many pages a shard holds
        self._seen_urls: set[int] = set()

    def prepare(self, batch: pa.RecordBatch) -> _Prepared:
        """Parse and vet a batch (pure Python); the token counts come next, in `finish`."""
        rows = batch.to_pylist()
        start = self.stats.rows_in
        self.stats.rows_in += len(rows)
        prepared = _Prepared()
        for offset, raw in enumerate(rows):
            parsed = parse_record(raw)
            if isinstance(parsed, Reject):
                prepared.rejects.append(self._reject_row(raw, start + offset, parsed))
                continue
            self.stats.valid += 1
            reject = self._content_reject(parsed)
            if reject:
                prepared.rejects.append(self._reject_row(raw, start + offset, reject))
            else:
                prepared.candidates.append((start + offset, raw, parsed))
        return prepared

    def finish(self, prepared: _Prepared, counts: list[int]) -> None:
        """Apply the token budget and the draw to a prepared batch, given its candidates' token counts."""
        rejects = prepared.rejects
        for (index, raw, doc), n_tokens in zip(prepared.candidates, counts, strict=True):
            if n_tokens > self.settings.max_text_tokens:
                rejects.append(self._reject_row(raw, index, Reject(
                    "too_many_tokens", f"{n_tokens} > {self.settings.max_text_tokens}"), n_tokens))
                continue
            loser = self._offer(index, raw, doc, n_tokens)
            if loser is not None:
                rejects.append(loser)
        if rejects:
            for r in rejects:
                self.stats.rejects[r["reject_reason"]] += 1
            self.on_reject(rejects)

    def _content_reject(self, doc: Doc) -> Reject | None:
        n_images = len(doc.image_info)
        if n_images == 0:
            return Reject("no_image", "document has no image")
        if n_images < self.settings.min_images:
            return Reject("too_few_images", f"{n_images} < {self.settings.min_images}")
        if not doc.text.strip():
            return Reject("no_text", "document has no text after stripping the end marker")
        return None

    def _offer(self, index: int, raw: dict, doc: Doc, n_tokens: int) -> dict | None:
        """Enter an eligible doc in the draw; returns a duplicate-url reject row, if any."""
        url_digest = int.from_bytes(hashlib.blake2b(doc.url.encode(), digest_size=8).digest(), "big")
        if url_digest in self._seen_urls:
            return self._resolve_duplicate(index, raw, doc, n_tokens)
        self._seen_urls.add(url_digest)
        self.stats.eligible += 1
        rank = sample_rank(doc.url, self.settings.seed)
        item = (-int(rank, 16), index, _Entry(index, raw, doc, n_tokens, rank))
        if len(self._heap) < self.settings.docs_per_shard:
            heapq.heappush(self._heap, item)
        elif item[0] > self._heap[0][0]:
            del self._drawn[heapq.heapreplace(self._heap, item)[2].doc.url]
        else:
            return None
        self._drawn[doc.url] = item[2]
        return None

    def _resolve_duplicate(self, index: int, raw: dict, doc: Doc, n_tokens: int) -> dict:
        """Same page twice: the copy with the smaller content hash stands, whatever the row order.

        Both copies share the url and so the rank: if the standing copy lost the draw, so does this
        one, and the newcomer is the recorded duplicate.
        """
        standing = self._drawn.get(doc.url)
        if standing is not None and doc.content_hash() < standing.doc.content_hash():
            loser = _Entry(standing.index, standing.raw, standing.doc, standing.n_tokens, standing.rank)
            standing.index, standing.raw, standing.doc, standing.n_tokens = index, raw, doc, n_tokens
            index, raw, n_tokens = loser.index, loser.raw, loser.n_tokens
        return self._reject_row(raw, index, Reject("duplicate_url", doc.url), n_tokens)

    def _doc_row(self, e: _Entry) -> dict[str, Any]:
        doc = e.doc
        return {
            "doc_id": doc.doc_id, "shard": self.shard, "row_index": e.index, "url": doc.url,
            "texts": doc.texts, "images": doc.images,
            "image_info": [vars(i) for i in doc.image_info],
            "n_images": len(doc.image_info), "n_texts": sum(t is not None for t in doc.texts),
            "text_tokens": e.n_tokens, "sample_rank": e.rank,
            "general_metadata": json.dumps(doc.general_metadata, ensure_ascii=False),
        }

    def _reject_row(self, raw: dict, index: int, reject: Reject, n_tokens: int | None = None) -> dict:
        return {"shard": self.shard, "row_index": index, "reject_reason": reject.reason,
                "reject_detail": reject.detail, "text_tokens": n_tokens,
                **{k: _as_json_text(raw.get(k)) for k in REJECT_RAW_COLUMNS}}

    def result(self) -> pa.Table:
        """The kept documents, ordered by sample rank (deterministic for a shard and seed)."""
        rows = [self._doc_row(e) for e in sorted((item[2] for item in self._heap), key=lambda e: e.rank)]
        self.stats.kept = len(rows)
        return pa.Table.from_pylist(rows, schema=FILTERED_DOCS_SCHEMA)


# Rejects keep the source row (as JSON text, since a bad row may not fit the source schema).
REJECT_RAW_COLUMNS = ("texts", "images", "metadata", "general_metadata")
REJECTS_SCHEMA = pa.schema([
    ("shard", pa.string()), ("row_index", pa.int64()), ("reject_reason", pa.string()),
    ("reject_detail", pa.string()), ("text_tokens", pa.int32()),
    *[(c, pa.string()) for c in REJECT_RAW_COLUMNS],
])


def _as_json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def filter_shard(batches: Iterable[pa.RecordBatch], shard: str, settings: FilterSettings,
                 count_tokens: TokenCounter, on_reject: Callable[[list[dict]], None]
                 ) -> tuple[pa.Table, FilterStats]:
    """Filter a shard. Tokenizing batch N (native code, off the GIL) overlaps parsing batch N+1;
    batches are finished strictly in order, so the result is the same as one batch at a time."""
    f = ShardFilter(shard, settings, on_reject)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
        pending = None
        for batch in batches:
            prepared = f.prepare(batch)
            future = pool.submit(count_tokens, prepared.texts()) if prepared.candidates else None
            if pending is not None:
                f.finish(pending[0], pending[1].result() if pending[1] else [])
            pending = (prepared, future)
        if pending is not None:
            f.finish(pending[0], pending[1].result() if pending[1] else [])
    return f.result(), f.stats
