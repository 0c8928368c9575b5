"""The release's first look: one self-contained `preview.html` a person opens before anything else.

It holds a seeded sample of records per mix (thumbnail, page link, contextual caption, the
conversation turns with each Q&A pair's leakage score, lineage) and the counts a person checks first:
statuses per stage, rejects by reason, dedup removals, records per mix. Everything is inside the
file: thumbnails are JPEG data: URIs, CSS is inline, there is no script, and a Content-Security-Policy
forbids loading anything else. Every text from the data (web page text, model output) is HTML-escaped.

The tables are read from storage for the released shards, `<root>/<folder>/<shard>.parquet`, only the
columns needed; the sample is the `per_mix` records of each mix with the smallest `sha256(seed:id)`,
so reruns, shard order and batching give the same page.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any

from upath import UPath

from viscon_dagster.core.chain.conversations import IMAGE_TOKEN
from viscon_dagster.core.exports.preview_html import render_preview
from viscon_dagster.core.exports.preview_records import (
    DEFAULT_PER_MIX,
    PreviewCounts,
    PreviewRecord,
    PreviewSources,
    add_thumbnails,
    choose,
    load_records,
    stage_counts,
)
from viscon_dagster.core.files.atomic import is_local, local_path, write_text_atomic

PREVIEW_FILE = "preview.html"


@dataclass
class PreviewSummary:
    path: UPath
    records: list[PreviewRecord]
    counts: PreviewCounts

    @property
    def location(self) -> str:
        """The file's local path, or its URL on an object store."""
        return local_path(self.path) if is_local(self.path) else str(self.path)

    def metadata(self) -> dict[str, Any]:
        return {"preview_records": len(self.records),
                "preview_thumbnails_missing": sum(r.thumbnail is None for r in self.records)}


def _md_cell(value: Any, max_chars: int = 80) -> str:
    s = " ".join(str("" if value is None else value).split())
    s = s if len(s) <= max_chars else s[: max_chars - 1] + "…"
    return escape(s, quote=False).replace("|", "\\|")


def first_question(r: PreviewRecord) -> str:
    """The human turn of the record's first Q&A pair ('' for a caption-only record)."""
    for i, t in enumerate(r.turns):
        if t["from"] == "gpt" and t.get("leakage") is not None:
            return r.turns[i - 1]["value"].removeprefix(IMAGE_TOKEN + "\n")
    return ""


def records_markdown(records: list[PreviewRecord], rows: int = 7) -> str:
    """A markdown table of a few records (the first of each mix first), for the release's metadata."""
    mixes: set[str] = set()
    firsts = [r for r in records if r.mix not in mixes and not mixes.add(r.mix)]
    picked = (firsts + [r for r in records if all(r is not f for f in firsts)])[:rows]
    lines = ["| mix | page | caption | first question | leakage |", "|---|---|---|---|---|"]
    for r in picked:
        leakage = "" if r.leakage is None else f"{r.leakage:.2f}"
        lines.append("| " + " | ".join(_md_cell(v) for v in (r.mix, r.doc_url, r.caption, first_question(r), leakage))
                     + " |")
    return "\n".join(lines)


def write_preview(sources: PreviewSources, shards: list[str], out: UPath, *, title: str,
                  per_mix: int = DEFAULT_PER_MIX, seed: int = 0, mixes: Iterable[str] | None = None,
                  released: dict[str, dict[str, int]] | None = None, version: str | None = None,
                  notes_html: str = "") -> PreviewSummary:
    """Sample, count, render and write `out / preview.html`."""
    if per_mix < 0:
        raise ValueError(f"preview per_mix must be >= 0, got {per_mix}")
    counts = stage_counts(sources, shards)

    def id_tables():
        for shard in shards:
            table = sources.read(sources.conversations, shard, ["id", "mix"])
            if table is None:
                raise FileNotFoundError(f"no {sources.conversations}/{shard}.parquet in storage to preview")
            yield shard, table

    chosen = choose(id_tables(), per_mix, seed, mixes, counts.records_per_mix)
    records = load_records(sources, chosen)
    add_thumbnails(records, sources.root)
    path = out / PREVIEW_FILE
    write_text_atomic(path, render_preview(records, counts, title, released, version, notes_html))
    return PreviewSummary(path=path, records=records, counts=counts)
