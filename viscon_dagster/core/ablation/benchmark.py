"""The ablation's benchmark: multiple-choice questions about one image each, in SEED-Bench's format (a question,
four options, the answer letter, the image, an optional dimension).

Two sources:

* **SEED-Bench** (or any benchmark laid out as it is), read with `datasets` from a local folder, `file://`,
  `s3://…` or `hf://datasets/…`:
  - the original layout (AILab-CVC/SEED-Bench): `SEED-Bench.json` (`{"questions": [{"answer", "choice_a"…"choice_d",
    "data_id", "data_type", "question", "question_id", "question_type_id"}, …], "question_type": {…}}`) beside the
    folder `SEED-Bench-image/` holding each image as `data_id` (a name given without its extension is looked up
    with `.jpg`, `.jpeg`, `.png`);
  - the parquet layout (lmms-lab/SEED-Bench on the Hub): `*.parquet` files with the same columns and the image
    embedded in `image` (a list of images; the first is the item's).
  Only image items count (`data_type` `image`; SEED-Bench-1's video dimensions 10–12 are skipped, each with its
  reason, as is an item without four options, an answer letter or a readable image).
* **the chain's own held-out MCQ** (the demo's fallback, and a cheap signal for any release): the kept
  multiple-choice items of `unique_qa_pairs` on held-out pages. A page is held out when it is in the release's
  `test` split (the page-URL hash of core/exports/split.py, with the release's `test_fraction` and seed) or when its
  shard is one of `holdout_shards`. The training mixes never see a held-out page (`decontaminated_mixes` drops them
  before it compares anything), so these questions are about pages and images no mix was trained on.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
from upath import UPath

from viscon_dagster.core.ablation.decontam import phash_of, question_hash
from viscon_dagster.core.exports.split import DEFAULT_TEST_FRACTION, split_for
from viscon_dagster.core.files.atomic import is_local, local_path

LETTERS = ("A", "B", "C", "D")
CHAIN_SOURCE = "chain"
SEED_JSON = "SEED-Bench.json"
SEED_IMAGES = "SEED-Bench-image"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# SEED-Bench-1's evaluation dimensions (question_type_id); 10-12 are video
SEED_DIMENSIONS = {1: "Scene Understanding", 2: "Instance Identity", 3: "Instance Attributes",
                   4: "Instance Location", 5: "Instances Counting", 6: "Spatial Relation", 7: "Instance Interaction",
                   8: "Visual Reasoning", 9: "Text Understanding", 10: "Action Recognition",
                   11: "Action Prediction", 12: "Procedure Understanding"}
IMAGE_DATA_TYPES = ("image", "single image")

BENCHMARK_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("source", pa.string()), ("question", pa.string()),
    ("options", pa.list_(pa.string())), ("answer", pa.string()), ("dimension", pa.string()),
    ("image_path", pa.string()),  # below the storage root
    ("image_sha256", pa.string()), ("image_phash", pa.string()), ("question_hash", pa.string()),
    ("shard", pa.string()), ("doc_url", pa.string()),  # where a chain item comes from (null for SEED-Bench)
])


@dataclass(frozen=True)
class HoldOut:
    """Which pages the training mixes never see: the release's test split, and every page of `shards`."""

    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0
    shards: tuple[str, ...] = ()

    def reason(self, shard: str | None, doc_url: str) -> str | None:
        """Why a page is held out (`holdout_shard`, `test_page`), or None when the mixes may train on it."""
        if shard is not None and shard in self.shards:
            return "holdout_shard"
        if split_for(doc_url, self.test_fraction, self.split_seed) == "test":
            return "test_page"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "shards": list(self.shards)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HoldOut:
        return cls(test_fraction=d["test_fraction"], split_seed=d["split_seed"], shards=tuple(d["shards"]))


@dataclass
class Item:
    """One benchmark item with its image bytes (written to storage by the asset)."""

    item_id: str
    source: str
    question: str
    options: list[str]
    answer: str
    image: bytes
    dimension: str | None = None
    image_path: str | None = None  # set when the image is already in storage (chain items)
    shard: str | None = None
    doc_url: str | None = None
    phash: str | None = None  # set by check_item

    def row(self, image_path: str) -> dict[str, Any]:
        return {"item_id": self.item_id, "source": self.source, "question": self.question,
                "options": self.options, "answer": self.answer, "dimension": self.dimension,
                "image_path": image_path, "image_sha256": hashlib.sha256(self.image).hexdigest(),
                "image_phash": self.phash or phash_of(self.image), "question_hash": question_hash(self.question),
                "shard": self.shard, "doc_url": self.doc_url}


@dataclass
class Skipped:
    item_id: str
    reason: str


@dataclass
class Loaded:
    """What a source gave: rows (BENCHMARK_SCHEMA) and the items skipped, with their reasons."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=BENCHMARK_SCHEMA)

    def skipped_reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason.split(":")[0] for s in self.skipped))


def _options_or_reason(options: list[Any], answer: Any) -> str | None:
    if len(options) != 4 or not all(isinstance(o, str) and o.strip() for o in options):
        return "bad_options"
    if not isinstance(answer, str) or answer.strip().upper() not in LETTERS:
        return "bad_answer"
    return None


def check_item(item: Item) -> str | None:
    """Why an item cannot be scored, or None."""
    if not item.question.strip():
        return "no_question"
    if reason := _options_or_reason(item.options, item.answer):
        return reason
    try:
        item.phash = phash_of(item.image)
    except Exception as e:  # noqa: BLE001 - any undecodable image is the item's fault, not the run's
        return f"image_unreadable:{type(e).__name__}"
    return None


# --- SEED-Bench ---------------------------------------------------------------------------------------------


def _join(location: UPath, *parts: str) -> UPath:
    for p in parts:
        location = location / p
    return location


def seed_layout(location: UPath) -> str:
    """`json` (SEED-Bench.json + SEED-Bench-image/) or `parquet` (*.parquet below the location)."""
    if (location / SEED_JSON).exists():
        return "json"
    if _parquet_files(location):
        return "parquet"
    raise FileNotFoundError(f"{location}: neither {SEED_JSON} (with {SEED_IMAGES}/) nor parquet files found: "
                            "not a SEED-Bench layout")


def _url(path: UPath) -> str:
    """What `datasets` is given: a local path as a path, anything else as its URL."""
    return local_path(path) if is_local(path) else str(path)


def _parquet_files(location: UPath) -> list[str]:
    try:
        return sorted(_url(p) for p in location.glob("**/*.parquet"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _image_file(images: UPath, data_id: str) -> bytes | None:
    candidates = [data_id] if "." in data_id.rsplit("/", 1)[-1] else []
    candidates += [data_id + s for s in IMAGE_SUFFIXES]
    for name in candidates:
        path = _join(images, *name.split("/"))
        if path.exists():
            return path.read_bytes()
    return None


def _seed_rows(location: UPath, layout: str, storage_options: dict | None, cache_dir: str | None):
    from datasets import load_dataset

    options = {"storage_options": storage_options} if storage_options else {}
    if layout == "json":
        return load_dataset("json", data_files=_url(location / SEED_JSON), field="questions", split="train",
                            cache_dir=cache_dir, **options)
    return load_dataset("parquet", data_files=_parquet_files(location), split="train", cache_dir=cache_dir,
                        **options)


def iter_seed_bench(location: UPath, *, storage_options: dict | None = None, dimensions: Iterable[int] | None = None,
                    limit: int | None = None, cache_dir: str | None = None) -> Iterator[Item | Skipped]:
    """Every item of a SEED-Bench-format benchmark at `location`, as an Item or as a Skipped with its reason.
    A location in neither layout is refused here, before any item is read (FileNotFoundError)."""
    layout = seed_layout(location)
    return _seed_items(location, layout, storage_options, dimensions, limit, cache_dir)


def _seed_items(location: UPath, layout: str, storage_options: dict | None, dimensions: Iterable[int] | None,
                limit: int | None, cache_dir: str | None) -> Iterator[Item | Skipped]:
    wanted = set(dimensions) if dimensions else None
    rows = _seed_rows(location, layout, storage_options, cache_dir)
    images = location / SEED_IMAGES
    n = 0
    for q in rows:
        item_id = f"seed:{q.get('question_id')}"
        dim_id = q.get("question_type_id")
        if wanted is not None and dim_id not in wanted:
            continue
        if str(q.get("data_type") or "image").strip().lower() not in IMAGE_DATA_TYPES:
            yield Skipped(item_id, f"not_an_image_item:{q.get('data_type')}")
            continue
        if layout == "json":
            data = _image_file(images, str(q.get("data_id")))
        else:
            embedded = q.get("image")
            embedded = embedded[0] if isinstance(embedded, list) and embedded else embedded
            data = _image_bytes(embedded)
        if data is None:
            yield Skipped(item_id, "image_missing")
            continue
        options = [q.get(f"choice_{c}") for c in "abcd"]
        item = Item(item_id=item_id, source="seed-bench", question=str(q.get("question") or ""),
                    options=[str(o).strip() if o is not None else "" for o in options],
                    answer=str(q.get("answer") or "").strip().upper(), image=data,
                    dimension=SEED_DIMENSIONS.get(dim_id, str(dim_id) if dim_id is not None else None))
        if reason := check_item(item):
            yield Skipped(item_id, reason)
            continue
        yield item
        n += 1
        if limit is not None and n >= limit:
            return


def _image_bytes(value: Any) -> bytes | None:
    """An image as `datasets` hands it (PIL image, {"bytes", "path"} or bytes) → its bytes."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, dict):
        return value.get("bytes")
    buf = io.BytesIO()
    value.save(buf, format=value.format or "PNG")
    return buf.getvalue()


# --- the chain's held-out MCQ ---------------------------------------------------------------------------------

_LETTER_PREFIX = re.compile(r"^\s*[A-D]\s*[.):]\s+")


def chain_items(shards: Iterable[tuple[str, pa.Table, pa.Table]], holdout: HoldOut,
                read_image: Callable[[str], bytes]) -> Iterator[Item | Skipped]:
    """The kept MCQ items of held-out pages: (shard, unique_qa_pairs table, captions table) per shard;
    `read_image(image_path)` reads an image below the storage root."""
    for shard, unique_qa, captions in shards:
        paths = {(c["doc_id"], c["position"]): c["image_path"]
                 for c in captions.select(["doc_id", "position", "image_path"]).to_pylist()}
        for q in unique_qa.filter(unique_qa["kept"]).to_pylist():
            if q["kind"] != "mcq" or holdout.reason(shard, q["doc_url"]) is None:
                continue
            item_id = f"chain:{shard}:{q['doc_id']}:{q['position']}:{q['item_index']}"
            path = paths.get((q["doc_id"], q["position"]))
            if path is None:
                yield Skipped(item_id, "no_caption_row")
                continue
            try:
                data = read_image(path)
            except FileNotFoundError:
                yield Skipped(item_id, "image_missing")
                continue
            options = [_LETTER_PREFIX.sub("", o or "").strip() for o in (q["options"] or [])]
            item = Item(item_id=item_id, source=CHAIN_SOURCE, question=(q["question"] or "").strip(),
                        options=options, answer=(q["answer"] or "").strip().upper()[:1], image=data,
                        dimension=None, image_path=path, shard=shard, doc_url=q["doc_url"])
            if reason := check_item(item):
                yield Skipped(item_id, reason)
                continue
            yield item


def benchmark_fingerprint(items: pa.Table) -> str:
    """The items and their answers: every mix must be scored on the same benchmark to be compared."""
    h = hashlib.sha256()
    for item_id, answer in zip(items.column("item_id").to_pylist(), items.column("answer").to_pylist()):
        h.update(f"{item_id}\t{answer}\n".encode())
    return h.hexdigest()[:16]
