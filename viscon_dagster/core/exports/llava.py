"""LLaVA / ShareGPT4V export: one JSON list per (mix, split) plus an image folder.

Layout below `<out>/llava/` (the `image_folder` to give LLaVA's trainer):
    <mix>/<split>.json          [{"id", "image": "images/ab/ab….jpg", "conversations": [...], lineage…}, …]
                                both splits of every mix the release has (`[]` for a split without records)
    images/ab/ab….jpg           the normalised JPEGs, at the relative paths the JSON names
    README.md                   how to train on it (usage.py; written by the release)
Lineage keys ride along in each record; LLaVA's loader reads only id/image/conversations.
The JSON is streamed record by record, so a large mix never sits in memory as one list, to a temp file
(or an upload) that `close()` publishes whole.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, TextIO

from upath import UPath

from viscon_dagster.core.exports.columns import RELEASE_LINEAGE
from viscon_dagster.core.exports.split import SPLITS
from viscon_dagster.core.exports.storage_io import write_files
from viscon_dagster.core.files.atomic import AtomicFile

RECORD_KEYS = ("id", "image", "conversations", "mix", "content", *RELEASE_LINEAGE)


class LlavaWriter:
    name = "llava"

    def __init__(self, out: UPath, workers: int = 8):
        self.folder, self.workers = out / "llava", workers
        self._files: dict[tuple[str, str], AtomicFile] = {}
        self.counts: Counter = Counter()  # (mix, split) → records
        self._copied: set[str] = set()

    def _file(self, mix: str, split: str) -> TextIO:
        key = (mix, split)
        if key not in self._files:
            f = self._files[key] = AtomicFile(self.folder / mix / f"{split}.json", "w")  # appears on close()
            f.file.write("[\n")
        return self._files[key].file

    def write(self, rows: list[dict[str, Any]], images: dict[str, bytes]) -> None:
        new = {p: images[p] for p in {r["image"] for r in rows} if p not in self._copied}
        write_files(self.folder, new, self.workers)
        self._copied.update(new)
        for r in rows:
            key = (r["mix"], r["split"])
            f = self._file(*key)
            f.write(("" if self.counts[key] == 0 else ",\n")
                    + json.dumps({k: r[k] for k in RECORD_KEYS}, ensure_ascii=False))
            self.counts[key] += 1

    def close(self) -> dict[str, Any]:
        for mix in {m for m, _ in self._files}:  # every mix declares both splits
            for split in SPLITS:
                self._file(mix, split)
                self.counts[(mix, split)] += 0
        for f in self._files.values():
            f.file.write("\n]\n")
            f.commit()
        return {"images": len(self._copied)}
