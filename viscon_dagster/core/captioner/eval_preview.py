"""The evaluation's first look: one self-contained `preview.html` per recipe.

The scorecard table, then for a few held-out images (the smallest `sha256(seed:image)`, so reruns show the
same ones) the teacher's, the base's and the tuned captioner's captions side by side, each with its scores
(CIDEr-D, ROUGE-L, CLIPScore, the names/numbers/dates it asserts and how many the page supports, repetition)
and the judge's verdicts. As the release's preview (core/exports/preview.py): thumbnails are JPEG data:
URIs, CSS is inline, there is no script, a Content-Security-Policy forbids loading anything, and every text
from the data is HTML-escaped.
"""

from __future__ import annotations

import hashlib
import math
from html import escape

from viscon_dagster.core.captioner.faithfulness import faithfulness
from viscon_dagster.core.captioner.scorecard import METRICS, TEACHER, Scorecard
from viscon_dagster.core.exports.preview_html import CSP
from viscon_dagster.core.exports.preview_records import thumbnail

PREVIEW_FILE = "preview.html"
DEFAULT_ITEMS = 6
SYSTEMS = (TEACHER, "base", "tuned")

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1280px;padding:16px;
color:#1d2125;background:#f6f7f9}h1{font-size:22px;margin:4px 0 12px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #d5d9de}
table.score{border-collapse:collapse;background:#fff;font-size:13px}table.score td,table.score th{border:1px solid
#d5d9de;padding:3px 8px;text-align:left;vertical-align:top}td.n{font-variant-numeric:tabular-nums}
.sig{color:#176f2c;font-weight:600}article{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:12px;
margin:0 0 14px;overflow-wrap:anywhere}figure{margin:0 0 8px}figure img{max-width:256px;max-height:256px;
display:block;border-radius:4px}.noimg{color:#a33;font-style:italic}.caps{display:grid;
grid-template-columns:repeat(3,1fr);gap:10px}.caps section{border-left:3px solid #d5d9de;padding:0 8px}
h3{font-size:13px;margin:0 0 4px;text-transform:uppercase;letter-spacing:.04em;color:#5a636d}
blockquote{margin:4px 0;white-space:pre-wrap}dl{display:grid;grid-template-columns:max-content 1fr;gap:0 8px;
margin:6px 0;font-size:12px;color:#3b434b}dt{color:#5a636d}dd{margin:0}.bad{color:#a33}.meta{color:#5a636d}
"""


def _e(x) -> str:
    return escape("" if x is None else str(x))


def choose_items(image_keys: list[str], k: int = DEFAULT_ITEMS, seed: int = 0) -> list[int]:
    order = sorted(range(len(image_keys)),
                   key=lambda i: hashlib.sha256(f"{seed}:{image_keys[i]}".encode()).hexdigest())
    return sorted(order[:k])


def _num(x, share: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f}%" if share else f"{x:.2f}"


def score_table_html(card: Scorecard) -> str:
    systems = [s for s in ("base", "tuned", TEACHER) if s in card.systems]
    head = "".join(f"<th>{_e(s)}<br><code>{_e(card.systems[s])}</code></th>" for s in systems)
    rows = [f"<tr><th>metric (n={card.n})</th>{head}<th>tuned − base</th><th>tuned − teacher</th></tr>"]
    for m in METRICS:
        if m.key not in card.metrics:
            continue
        share = m.scale == "share"
        cells = []
        for s in systems:
            i = card.score(m.key, s)
            cells.append("<td class=n>–</td>" if i is None or math.isnan(i.value) else
                         f"<td class=n>{_num(i.value, share)} [{_num(i.low, share)}, {_num(i.high, share)}]</td>")
        for a, b in (("tuned", "base"), ("tuned", TEACHER)):
            p = card.pair(m.key, a, b)
            if p is None or math.isnan(p.diff.value):
                cells.append("<td class=n>–</td>")
                continue
            text = f"{_num(p.diff.value, share)} [{_num(p.diff.low, share)}, {_num(p.diff.high, share)}]"
            if p.p_value is not None:
                text += f" p={p.p_value:.3f}"
            cells.append(f"<td class='n{' sig' if p.significant else ''}'>{_e(text)}</td>")
        arrow = {"higher": " ↑", "lower": " ↓", None: ""}[m.better]
        rows.append(f"<tr><td>{_e(m.title + arrow)}</td>{''.join(cells)}</tr>")
    for opponent, w in card.judge.items():
        rate = "–" if w.win_rate is None else \
            f"{w.win_rate.value:.3f} [{w.win_rate.low:.3f}, {w.win_rate.high:.3f}] p={w.p_value}"
        rows.append(f"<tr><td>judge win-rate, tuned vs {_e(opponent)} ↑</td>"
                    f"<td class='n{' sig' if w.significant else ''}' colspan={len(systems) + 2}>{_e(rate)} · "
                    f"{_e(', '.join(f'{k} {v}' for k, v in w.counts.items()))}</td></tr>")
    return f"<table class=score>{''.join(rows)}</table>"


def render_preview(title: str, card: Scorecard, captions: dict[str, list[str]], contexts: list[str],
                   image_keys: list[str], images: dict[int, bytes], urls: list[str], gate: dict,
                   items: list[int]) -> str:
    """The page. `captions`: system -> captions (teacher, base, tuned); `images`: item -> image bytes (missing
    ones are said so); `gate`: the gate decision's dict."""
    verdict = "passed" if gate.get("passed") else "FAILED"
    rules = "".join(f"<li class={'' if r['passed'] else 'bad'}>{_e(r['name'])}: "
                    f"{'pass' if r['passed'] else 'FAIL'} — {_e(r['detail'])}</li>" for r in gate.get("rules", []))
    arts = []
    for i in items:
        try:
            img = f'<img src="{thumbnail(images[i])}" alt="">' if i in images else \
                "<span class=noimg>image not readable</span>"
        except OSError as e:
            img = f"<span class=noimg>image not readable: {_e(type(e).__name__)}</span>"
        cols = []
        for s in SYSTEMS:
            cap = captions[s][i]
            f = faithfulness(cap, contexts[i])
            row = card.per_item.get(s, {})
            scores = [("CIDEr-D", row.get("cider")), ("ROUGE-L", row.get("rouge_l")),
                      ("CLIPScore", row.get("clip_score"))]
            dl = "".join(f"<dt>{k}</dt><dd>{_num(v[i])}</dd>" for k, v in scores if v is not None)
            dl += f"<dt>page facts</dt><dd>{f.supported}/{f.asserted} supported</dd>"
            if f.unsupported:
                dl += f"<dt>not on the page</dt><dd class=bad>{_e(', '.join(f.unsupported))}</dd>"
            if "repetition" in row:
                dl += f"<dt>repetition</dt><dd>{_num(row['repetition'][i], True)}</dd>"
            if s != "tuned":
                w = card.judge.get(s)
                if w is not None and i < len(w.outcomes):
                    why = " / ".join(x for x in w.reasons[i] if x)
                    dl += f"<dt>judge</dt><dd>tuned {_e(w.outcomes[i])}{' — ' + _e(why) if why else ''}</dd>"
            label = card.systems.get(s, s)
            cols.append(f"<section><h3>{_e(s)}</h3><div class=meta><code>{_e(label)}</code></div>"
                        f"<blockquote>{_e(cap) or '<em class=bad>(empty)</em>'}</blockquote><dl>{dl}</dl></section>")
        arts.append(f"<article><figure>{img}</figure><div class=meta>{_e(urls[i])} · image "
                    f"<code>{_e(image_keys[i][:12])}</code></div><div class=caps>{''.join(cols)}</div></article>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{_e(title)} — evaluation</title><style>{STYLE}</style></head><body>"
            f"<h1>{_e(title)} — evaluation</h1><h2>gate: {verdict}</h2><ul>{rules}</ul>"
            f"<h2>scorecard</h2>{score_table_html(card)}"
            f"<h2>{len(items)} held-out images</h2>{''.join(arts)}</body></html>\n")
