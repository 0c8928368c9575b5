"""The preview page itself: one self-contained HTML file. Thumbnails are JPEG data: URIs, CSS is inline, there is
no script, and a Content-Security-Policy forbids loading anything else; every text from the data (web page text,
model output) is HTML-escaped."""

from __future__ import annotations

from collections import Counter, defaultdict
from html import escape
from typing import Any
from urllib.parse import urlsplit

from viscon_dagster.core.exports.preview_records import PreviewCounts, PreviewRecord

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

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
