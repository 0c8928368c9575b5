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

import base64
import hashlib
import heapq
import io
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError
from upath import UPath

from viscon_dagster.core.chain.conversations import IMAGE_TOKEN, without_image_token
from viscon_dagster.core.exports.card import shareable_url
from viscon_dagster.core.exports.storage_io import read_images
from viscon_dagster.core.files.atomic import is_local, local_path, write_text_atomic
from viscon_dagster.core.files.parquet import partition_file

DEFAULT_PER_MIX = 8
THUMBNAIL_EDGE = 256
PREVIEW_FILE = "preview.html"
LINEAGE = (("shard", "shard"), ("caption model", "caption_model"), ("caption prompt", "caption_prompt_version"),
           ("QA model", "qa_model"), ("QA prompt", "qa_prompt_version"))
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


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


# --- rendering --------------------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1280px;padding:16px;
color:#1d2125;background:#f6f7f9}
h1{font-size:22px;margin:4px 0 12px}h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #d5d9de}
h3{font-size:13px;margin:0 0 4px;text-transform:uppercase;letter-spacing:.04em;color:#5a636d}
.counts{display:flex;flex-wrap:wrap;gap:12px}.counts section{background:#fff;border:1px solid #d5d9de;
border-radius:6px;padding:8px 12px;min-width:180px}table{border-collapse:collapse}td{padding:1px 8px 1px 0}
td.n{text-align:right;font-variant-numeric:tabular-nums}.missing{color:#a33}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:14px}
article{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:12px;overflow-wrap:anywhere}
figure{margin:0 0 8px}figure img{max-width:256px;max-height:256px;display:block;border-radius:4px}
.noimg{color:#a33;font-style:italic}dl{display:grid;grid-template-columns:max-content 1fr;gap:0 8px;margin:6px 0;
font-size:12px;color:#3b434b}dt{color:#5a636d}dd{margin:0}blockquote{margin:6px 0;padding:6px 10px;
background:#f0f4f8;border-left:3px solid #7a9cc6;white-space:pre-wrap}ol.turns{padding-left:0;list-style:none}
ol.turns li{margin:4px 0;padding:4px 8px;border-radius:4px;white-space:pre-wrap}li.human{background:#f3f0e8}
li.gpt{background:#eaf3ec}.role{font-weight:600;margin-right:4px}.leak{float:right;font-size:12px;color:#5a636d}
"""


# C0 controls other than tab/newline/CR are not allowed in HTML text (tiny models do write NUL)
_CONTROLS = {c: "\ufffd" for c in [*range(9), 11, 12, *range(14, 32), 127]}


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True).translate(_CONTROLS)


def safe_href(url: str | None) -> str | None:
    """The URL if it is a plain http(s) link, else None (a `javascript:` or `data:` URL is shown as text)."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def _page_link(url: str | None) -> str:
    href = safe_href(url)
    if href is None:
        return f'<span class="page">{_e(url)}</span>'
    return f'<a class="page" href="{_e(href)}" rel="noopener noreferrer nofollow" target="_blank">{_e(url)}</a>'


def _count_table(title: str, counts: Counter, missing: list[str]) -> str:
    rows = "".join(f'<tr><td>{_e(label)}</td><td class="n">{n}</td></tr>'
                   for label, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    body = f"<table>{rows}</table>" if rows else "<p>none</p>"
    if missing:
        body += f'<p class="missing">no file for shard(s): {_e(", ".join(missing))}</p>'
    return f'<section data-stage="{_e(title)}"><h3>{_e(title)}</h3>{body}</section>'


def _card(r: PreviewRecord) -> str:
    image = (f'<img src="{r.thumbnail}" alt="thumbnail of {_e(r.image)}">' if r.thumbnail
             else f'<p class="noimg">{_e(r.thumbnail_error or "no thumbnail")}</p>')
    caption = (f'<blockquote class="caption">{_e(r.caption)}</blockquote>' if r.caption is not None
               else '<p class="noimg">contextual caption not found in captions</p>')
    turns = "".join(
        f'<li class="{_e(t["from"])}"><span class="role">{_e(t["from"])}</span>'
        + (f'<span class="leak">leakage {t["leakage"]:.2f}</span>' if t.get("leakage") is not None else "")
        + f'{_e(t["value"])}</li>' for t in r.turns)
    leakage = "—" if r.leakage is None else f"{r.leakage:.2f}"
    lineage = "".join(f"<dt>{_e(label)}</dt><dd>{_e(value)}</dd>" for label, value in r.lineage.items())
    return (f'<article id="{_e(r.id)}" data-mix="{_e(r.mix)}"><figure>{image}</figure>'
            f"<dl><dt>page</dt><dd>{_page_link(r.doc_url)}</dd><dt>image source</dt><dd>{_e(r.image_url)}</dd>"
            f'<dt>record</dt><dd>{_e(r.id)}</dd><dt>leakage</dt><dd class="leakage">{leakage}</dd>{lineage}</dl>'
            f'<h3>contextual caption</h3>{caption}<h3>conversation</h3><ol class="turns">{turns}</ol></article>')


def render_preview(records: list[PreviewRecord], counts: PreviewCounts, title: str,
                   released: dict[str, dict[str, int]] | None = None, version: str | None = None,
                   notes_html: str = "") -> str:
    """The whole page; `released` is the export's records per mix and split, `version` the release version,
    `notes_html` a section after the counts (the ablation's; escaped by whoever renders it)."""
    sections = [_count_table("conversations (records per mix)", counts.records_per_mix, [])]
    if released:
        sections.append(_count_table("released (mix / split)", Counter(
            {f"{mix} / {split}": n for mix, splits in released.items() for split, n in splits.items()}), []))
    sections += [_count_table(stage, c, counts.missing.get(stage, [])) for stage, c in counts.stages.items()]
    by_mix: dict[str, list[PreviewRecord]] = defaultdict(list)
    for r in records:
        by_mix[r.mix].append(r)
    gallery = "".join(f'<h2 id="mix-{_e(mix)}">{_e(mix)} — {len(rs)} of {counts.records_per_mix.get(mix, len(rs))}'
                      f' records</h2><div class="cards">{"".join(_card(r) for r in rs)}</div>'
                      for mix, rs in by_mix.items()) or "<p>no records</p>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><meta name="referrer" content="no-referrer">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_e(title)} — preview</title>'
            f"<style>{STYLE}</style></head><body><h1>{_e(title)} — preview</h1>"
            + (f'<p class="version">release version <code>{_e(version)}</code></p>' if version else "") +
            f'<h2>counts</h2><div class="counts">{"".join(sections)}</div>{notes_html}{gallery}</body></html>\n')


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
