"""Parquet exports with the image embedded: size-bounded shards named the way the HF Hub names them.

* Idefics-style chat messages (`<out>/idefics/<mix>/<split>-0000N-of-0000M.parquet`): `images`
  (a list of HF `Image` values, {bytes, path}) and `messages` ([{role: user|assistant, content:
  [{type: image} | {type: text, text}]}]) — the shape TRL's VLM SFT examples and
  `processor.apply_chat_template` take — plus id, mix, content and the lineage columns.
* HF dataset (`<out>/hf/data/<mix>/<split>-0000N-of-0000M.parquet`, one config per mix): `image`
  (HF `Image`), `conversations` (LLaVA turns), id, mix, content and the lineage columns.

The HF feature types ride in the parquet schema metadata, so `datasets` decodes the images.
Shards are written under temporary names and renamed once the shard count is known. Every mix the release has
gets files for both splits: a split without records (split.py makes that rare) is one shard with the schema and no
row group, which any parquet reader (and `datasets` globbing the folder) reads as no rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from viscon_dagster.core.chain.conversations import IMAGE_TOKEN
from viscon_dagster.core.exports.columns import RELEASE_LINEAGE
from viscon_dagster.core.exports.split import SPLITS

DEFAULT_MAX_SHARD_BYTES = 256 << 20
ROLES = {"human": "user", "gpt": "assistant"}


@cache
def idefics_schema() -> pa.Schema:
    from datasets import Features, Image, List, Value  # lazy: the import takes a second

    text = Value("string")
    return Features({
        "id": text, "mix": text, "content": text,
        "images": List(Image()),
        "messages": List({"role": text, "content": List({"type": text, "text": text})}),
        **{c: text for c in RELEASE_LINEAGE},
    }).arrow_schema


@cache
def hf_schema() -> pa.Schema:
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features({
        "id": text, "mix": text, "content": text, "image": Image(),
        "conversations": List({"from": text, "value": text}),
        **{c: text for c in RELEASE_LINEAGE},
    }).arrow_schema


def to_messages(conversations: list[dict[str, str]]) -> list[dict[str, Any]]:
    """LLaVA turns → chat messages; each `<image>` becomes an image part where it stood."""
    messages = []
    for turn in conversations:
        content: list[dict[str, Any]] = []
        for i, piece in enumerate(turn["value"].split(IMAGE_TOKEN)):
            if i > 0:
                content.append({"type": "image", "text": None})
                piece = piece.removeprefix("\n")
            if piece:
                content.append({"type": "text", "text": piece})
        messages.append({"role": ROLES[turn["from"]], "content": content})
    return messages


def _common(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "mix": r["mix"], "content": r["content"], **{c: r[c] for c in RELEASE_LINEAGE}}


def idefics_row(r: dict[str, Any], image: bytes) -> dict[str, Any]:
    return {**_common(r), "images": [{"bytes": image, "path": r["image"]}],
            "messages": to_messages(r["conversations"])}


def hf_row(r: dict[str, Any], image: bytes) -> dict[str, Any]:
    return {**_common(r), "image": {"bytes": image, "path": r["image"]}, "conversations": r["conversations"]}


def estimate_row_bytes(r: dict[str, Any], image: bytes) -> int:
    """What a row adds to a shard, near enough: the JPEG (incompressible) plus the text."""
    return len(image) + len(json.dumps(r["conversations"], ensure_ascii=False)) + 512


class ShardedParquetWriter:
    """Rows of one (config, split) into `<folder>/<split>-NNNNN-of-MMMMM.parquet`, each ≤ ~max_bytes."""

    def __init__(self, folder: UPath, split: str, schema: pa.Schema, max_bytes: int):
        self.folder, self.split, self.schema, self.max_bytes = folder, split, schema, max_bytes
        self.rows = 0
        self._tmp: list[UPath] = []
        self._writer: pq.ParquetWriter | None = None
        self._file = None
        self._file_bytes = 0

    def _open(self) -> None:
        path = self.folder / f"_tmp-{self.split}-{len(self._tmp):05d}.parquet"  # outside the split glob
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp.append(path)
        self._file = path.open("wb")
        self._writer = pq.ParquetWriter(self._file, self.schema, compression="zstd")
        self._file_bytes = 0

    def _flush(self, rows: list[dict], size: int) -> None:
        if not rows:
            return
        if self._writer is None:
            self._open()
        self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
        self._file_bytes += size
        self.rows += len(rows)

    def _finish_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._file.close()
            self._writer = self._file = None
            self._file_bytes = 0

    def write(self, rows: list[tuple[dict, int]]) -> None:
        """(row, estimated bytes) pairs; a shard is closed before the row that would overflow it."""
        pending, size = [], 0
        for row, n in rows:
            if pending or self._writer is not None:
                if self._file_bytes + size + n > self.max_bytes:
                    self._flush(pending, size)
                    self._finish_file()
                    pending, size = [], 0
            pending.append(row)
            size += n
        self._flush(pending, size)

    def close(self) -> list[UPath]:
        if not self._tmp:  # a split without records: the schema and no row group (`datasets` refuses a row
            self._open()   # group of 0 rows: "BatchSize must be greater than 0")
        self._finish_file()
        total, final = len(self._tmp), []
        for i, tmp in enumerate(self._tmp):
            dst = self.folder / f"{self.split}-{i:05d}-of-{total:05d}.parquet"
            tmp.fs.mv(tmp.path, dst.path)
            final.append(dst)
        return final


class ParquetExport:
    """One sharded writer per (mix, split) below `<out>/<subdir>/<mix>/`."""

    def __init__(self, name: str, folder: UPath, schema: pa.Schema,
                 make_row: Callable[[dict, bytes], dict], max_shard_bytes: int):
        self.name, self.folder, self.schema, self.make_row = name, folder, schema, make_row
        self.max_shard_bytes = max_shard_bytes
        self._writers: dict[tuple[str, str], ShardedParquetWriter] = {}
        self.counts: Counter = Counter()
        self.files: dict[tuple[str, str], list[UPath]] = {}

    def write(self, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        groups: dict[tuple[str, str], list] = {}
        for r in rows:
            image = images[r["image"]]
            row = (self.make_row(r, image), estimate_row_bytes(r, image))
            groups.setdefault((r["mix"], r["split"]), []).append(row)
        for (mix, split), group in groups.items():
            writer = self._writers.get((mix, split))
            if writer is None:
                writer = self._writers[(mix, split)] = ShardedParquetWriter(
                    self.folder / mix, split, self.schema, self.max_shard_bytes)
            writer.write(group)
            self.counts[(mix, split)] += len(group)

    def close(self) -> dict[str, Any]:
        for mix in {m for m, _ in self._writers}:  # every mix declares both splits
            for split in SPLITS:
                if (mix, split) not in self._writers:
                    self._writers[(mix, split)] = ShardedParquetWriter(self.folder / mix, split, self.schema,
                                                                       self.max_shard_bytes)
                    self.counts[(mix, split)] += 0
        self.files = {key: w.close() for key, w in self._writers.items()}
        return {"shards": {f"{m}/{s}": len(files) for (m, s), files in self.files.items()}}


def idefics_export(out: UPath, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> ParquetExport:
    return ParquetExport("idefics", out / "idefics", idefics_schema(), idefics_row, max_shard_bytes)


def hf_export(out: UPath, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> ParquetExport:
    return ParquetExport("hf", out / "hf" / "data", hf_schema(), hf_row, max_shard_bytes)
