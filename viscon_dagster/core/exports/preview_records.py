"""What the release's preview shows: the stage counts of the released shards and a seeded sample of records per
mix (the `per_mix` records with the smallest `sha256(seed:id)`, so reruns, shard order and batching give the same
page), each with its caption, turns, leakage, lineage and a JPEG thumbnail. The tables are read from storage,
`<root>/<folder>/<shard>.parquet`, only the columns needed."""

from __future__ import annotations

import base64
import hashlib
import heapq
import io
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from upath import UPath

from viscon_dagster.core.chain.conversations import IMAGE_TOKEN, without_image_token
from viscon_dagster.core.exports.card import shareable_url
from viscon_dagster.core.exports.storage_io import read_images
from viscon_dagster.core.files.parquet import partition_file

DEFAULT_PER_MIX = 8
THUMBNAIL_EDGE = 256
LINEAGE = (("shard", "shard"), ("caption model", "caption_model"), ("caption prompt", "caption_prompt_version"),
           ("QA model", "qa_model"), ("QA prompt", "qa_prompt_version"))


@dataclass(frozen=True)
class PreviewSources:
    """Where each stage's per-shard tables live: folders below `root` (an asset key path joined by '/')."""

    root: UPath
    conversations: str = "conversations"
    captions: str = "captions"
    qa_pairs: str = "qa_pairs"
    unique_qa_pairs: str = "unique_qa_pairs"
    images: str = "images"
    rejects: str = "filtered_docs_rejects"

    def read(self, folder: str, shard: str, columns: list[str] | None) -> pa.Table | None:
        """The shard's table with only `columns`; None when the stage has no file for the shard."""
        path = partition_file(self.root, folder.split("/"), shard)
        try:
            with path.open("rb") as f:
                return pq.read_table(f, columns=columns)
        except FileNotFoundError:
            return None


# stage → (PreviewSources field, columns read, the label a row is counted under)
STAGES: dict[str, tuple[str, list[str], Callable[[dict], str]]] = {
    "filtered_docs rejects": ("rejects", ["reject_reason"], lambda r: r["reject_reason"]),
    "images": ("images", ["status"], lambda r: r["status"]),
    "captions": ("captions", ["status"], lambda r: r["status"]),
    "qa_pairs": ("qa_pairs", ["valid", "reason"], lambda r: "valid" if r["valid"] else f"invalid: {r['reason']}"),
    "unique_qa_pairs": ("unique_qa_pairs", ["kept", "dup_scope"],
                        lambda r: "kept" if r["kept"] else f"removed: {r['dup_scope']} duplicate"),
}


@dataclass
class PreviewCounts:
    stages: dict[str, Counter] = field(default_factory=dict)        # stage → label → rows
    missing: dict[str, list[str]] = field(default_factory=dict)     # stage → shards without a file
    records_per_mix: Counter = field(default_factory=Counter)


@dataclass
class PreviewRecord:
    mix: str
    id: str
    doc_url: str
    image: str                       # path relative to the storage root
    image_url: str | None
    caption: str | None              # the contextual caption of the image (None: not found)
    turns: list[dict[str, Any]]      # {"from", "value", "leakage"}; leakage on the gpt turn of a Q&A pair
    lineage: dict[str, str | None]
    thumbnail: str | None = None     # data: URI
    thumbnail_error: str | None = None

    @property
    def leakage(self) -> float | None:
        scores = [t["leakage"] for t in self.turns if t.get("leakage") is not None]
        return round(statistics.fmean(scores), 4) if scores else None


def stage_counts(sources: PreviewSources, shards: Iterable[str]) -> PreviewCounts:
    """Rows per label for every stage of `STAGES` over the shards; a shard without a file is listed."""
    counts = PreviewCounts()
    for shard in shards:
        for stage, (folder, columns, label) in STAGES.items():
            table = sources.read(getattr(sources, folder), shard, columns)
            found = counts.stages.setdefault(stage, Counter())
            if table is None:
                counts.missing.setdefault(stage, []).append(shard)
                continue
            for group in table.group_by(columns).aggregate([([], "count_all")]).to_pylist():
                found[label(group)] += group["count_all"]
    return counts


def sample_key(record_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{record_id}".encode()).hexdigest()


def choose(tables: Iterable[tuple[str, pa.Table]], per_mix: int, seed: int = 0,
           mixes: Iterable[str] | None = None, counts: Counter | None = None) -> dict[str, list[tuple[str, str]]]:
    """{mix: [(shard, id)]}: the `per_mix` records of each mix with the smallest seeded hash of their id.

    `tables` are (shard, table with `id` and `mix`); `counts`, when given, receives the records per mix.
    """
    wanted = set(mixes) if mixes is not None else None
    best: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for shard, table in tables:
        found: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for rid, mix in zip(table["id"].to_pylist(), table["mix"].to_pylist()):
            if wanted is None or mix in wanted:
                found[mix].append((sample_key(rid, seed), shard, rid))
        for mix, keyed in found.items():
            if counts is not None:
                counts[mix] += len(keyed)
            best[mix] = heapq.nsmallest(per_mix, best[mix] + heapq.nsmallest(per_mix, keyed))
    return {mix: [(shard, rid) for _, shard, rid in best[mix]] for mix in sorted(best, key=lambda m: (m != "leaky", m))}


def _with_leakage(turns: list[dict], pairs: list[tuple[str, float | None]]) -> list[dict]:
    """Turns with the leakage of the Q&A pair each human turn asks (matched by its question text)."""
    out = []
    for i, t in enumerate(turns):
        out.append({"from": t["from"], "value": t["value"], "leakage": None})
        if t["from"] != "gpt":
            continue
        asked = turns[i - 1]["value"].removeprefix(IMAGE_TOKEN + "\n")
        for question, leakage in pairs:
            if question and (asked == question or asked.startswith(question + "\n")):
                out[-1]["leakage"] = leakage
                break
    return out


def load_records(sources: PreviewSources, chosen: dict[str, list[tuple[str, str]]]) -> list[PreviewRecord]:
    """The chosen records with their contextual caption and Q&A leakage, in `chosen`'s order."""
    by_shard: dict[str, set[str]] = defaultdict(set)
    for picks in chosen.values():
        for shard, rid in picks:
            by_shard[shard].add(rid)
    rows: dict[tuple[str, str], dict] = {}
    captions: dict[tuple[str, str, str], str] = {}
    pairs: dict[tuple[str, str, str], list[tuple[str, float | None]]] = defaultdict(list)
    for shard, ids in sorted(by_shard.items()):
        table = sources.read(sources.conversations, shard, None)
        if table is None:
            raise FileNotFoundError(f"{sources.conversations}/{shard}.parquet vanished while the preview was made")
        for r in table.filter(pc.is_in(table["id"], pa.array(sorted(ids)))).to_pylist():
            rows[(shard, r["id"])] = r
        cap = sources.read(sources.captions, shard, ["doc_id", "image_sha256", "caption", "status"])
        for c in (cap.to_pylist() if cap is not None else []):
            if c["status"] == "ok":
                captions[(shard, c["doc_id"], c["image_sha256"])] = c["caption"]
        qa = sources.read(sources.unique_qa_pairs, shard, ["doc_id", "image_sha256", "question", "leakage", "kept"])
        for q in (qa.to_pylist() if qa is not None else []):
            if q["kept"]:
                question = without_image_token(q["question"])
                pairs[(shard, q["doc_id"], q["image_sha256"])].append((question, q["leakage"]))
    records = []
    for mix, picks in chosen.items():
        for shard, rid in picks:
            r = rows[(shard, rid)]
            image_key = (shard, r["doc_id"], r["image_sha256"])
            records.append(PreviewRecord(
                mix=mix, id=rid, doc_url=r["doc_url"], image=r["image"], image_url=shareable_url(r.get("image_url")),
                caption=captions.get(image_key), turns=_with_leakage(r["conversations"], pairs.get(image_key, [])),
                lineage={label: r.get(col) for label, col in LINEAGE}))
    return records


def thumbnail(data: bytes, edge: int = THUMBNAIL_EDGE) -> str:
    """A JPEG data: URI of the image, its long edge at most `edge` pixels."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.thumbnail((edge, edge))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def add_thumbnails(records: list[PreviewRecord], root: UPath, edge: int = THUMBNAIL_EDGE) -> None:
    """Each record's thumbnail from `root / image`, or the reason it has none."""
    found, _ = read_images(root, (r.image for r in records))
    for r in records:
        if r.image not in found:
            r.thumbnail_error = "image missing from storage (not in the release)"
            continue
        try:
            r.thumbnail = thumbnail(found[r.image], edge)
        except (UnidentifiedImageError, OSError) as e:
            r.thumbnail_error = f"image unreadable: {type(e).__name__}"
