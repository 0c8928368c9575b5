"""The release's preview.html: a seeded sample per mix and the stage counts, self-contained and escaped.

Every stage's per-shard table is written in a real local storage root (S3 through moto for the release
asset), then the preview is built from storage, parsed, and rendered in headless Chromium with the
network sent to a recording proxy on loopback."""

from __future__ import annotations

import base64
import io
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image
from upath import UPath

from tests.chain.conversation_samples import samples, write_images
from viscon_dagster.core.chain.captions import CAPTIONS_SCHEMA
from viscon_dagster.core.chain.conversations import MIXES, build_conversations
from viscon_dagster.core.chain.qa import QA_SCHEMA
from viscon_dagster.core.documents.filtering import REJECTS_SCHEMA
from viscon_dagster.core.exports.preview import records_markdown, write_preview
from viscon_dagster.core.exports.preview_html import render_preview
from viscon_dagster.core.exports.preview_records import (
    PreviewCounts,
    PreviewRecord,
    PreviewSources,
    choose,
    stage_counts,
)
from viscon_dagster.core.files.parquet import write_parquet
from viscon_dagster.core.images.acquire import RESULT_SCHEMA

SHARDS = ("shard-0", "shard-1")
SCRIPT_CAPTION = 'Fireworks <script>document.title="pwned"</script> over the bay | "harbour" & pier.'
IMG_QUESTION = 'Which <img src="http://evil.example/x.png"> boat is shown?'
JS_URL = "javascript:alert(1)"
UNIQUE_SCHEMA = QA_SCHEMA.append(pa.field("kept", pa.bool_())).append(pa.field("duplicate_of", pa.string())) \
    .append(pa.field("similarity", pa.float32())).append(pa.field("dup_scope", pa.string()))
EXPECTED_STAGES = {
    "filtered_docs rejects": {"too_many_tokens": 3, "no_images": 1},
    "images": {"ok": 24, "http_404": 4},
    "captions": {"ok": 24, "refused": 2},
    "qa_pairs": {"valid": 74, "invalid: duplicate_options": 2},
    "unique_qa_pairs": {"kept": 72, "removed: image duplicate": 2},
}
RECORDS_PER_MIX = {"leaky": 24, "captions": 24, "free_form": 24, "mcq": 24, "qa": 24, "separate": 48,
                   "noncontextual": 12}


def shard_samples() -> dict[str, list[dict]]:
    shards = {"shard-0": samples(6, 2, "shard-0"), "shard-1": samples(6, 2, "shard-1", doc_offset=6)}
    hostile = shards["shard-0"][0]
    hostile["caption"] = SCRIPT_CAPTION
    hostile["free_form"][0]["question"] = IMG_QUESTION
    shards["shard-1"][3]["doc_url"] = JS_URL
    return shards


def stage_tables(shard: str, rows: list[dict]) -> dict[str, pa.Table]:
    """Every stage's table for one shard, in the real schemas, with a few failures of each kind."""
    base = [{"shard": shard, "doc_id": s["doc_id"], "doc_url": s["doc_url"], "position": k % 2,
             "image_sha256": s["image_sha256"]} for k, s in enumerate(rows)]
    captions = [{**b, "image_path": s["image_path"], "caption": s["caption"], "status": "ok",
                 "caption_model": s["caption_model"], "prompt_version": s["caption_prompt_version"]}
                for b, s in zip(base, rows)]
    captions.append({**base[0], "doc_id": "refused-doc", "status": "refused"})
    items = [{**b, "kind": kind, "item_index": i, "question": q["question"], "answer": q["answer"],
              "options": q.get("options"), "valid": True, "leakage": q["leakage"], "qa_model": s["qa_model"]}
             for b, s in zip(base, rows) for kind in ("free_form", "mcq") for i, q in enumerate(s[kind])]
    repeated = {**items[0], "item_index": 9, "question": items[0]["question"] + " again"}
    invalid = {**base[1], "kind": "mcq", "item_index": 5, "valid": False, "reason": "duplicate_options"}
    unique = [{**q, "kept": True} for q in items] + [{**repeated, "kept": False, "duplicate_of": "x",
                                                       "similarity": 0.95, "dup_scope": "image"}]
    images = [{"doc_id": s["doc_id"], "position": b["position"], "status": "ok", "sha256": s["image_sha256"]}
              for b, s in zip(base, rows)]
    images += [{"doc_id": rows[0]["doc_id"], "position": 7 + k, "status": "http_404"} for k in range(2)]
    rejects = [{"shard": shard, "row_index": k, "reject_reason": reason}
               for k, reason in enumerate(["too_many_tokens", "too_many_tokens", "no_images"]
                                          if shard == "shard-0" else ["too_many_tokens"])]
    return {"captions": pa.Table.from_pylist(captions, schema=CAPTIONS_SCHEMA),
            "qa_pairs": pa.Table.from_pylist(items + [repeated, invalid], schema=QA_SCHEMA),
            "unique_qa_pairs": pa.Table.from_pylist(unique, schema=UNIQUE_SCHEMA),
            "images": pa.Table.from_pylist(images, schema=RESULT_SCHEMA),
            "filtered_docs_rejects": pa.Table.from_pylist(rejects, schema=REJECTS_SCHEMA),
            "conversations": build_conversations(rows, MIXES, seed=0).table()}


def write_storage(root: UPath) -> None:
    shards = shard_samples()
    write_images(root, [s for rows in shards.values() for s in rows])
    for shard, rows in shards.items():
        for folder, table in stage_tables(shard, rows).items():
            write_parquet(table, root / folder / f"{shard}.parquet")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> UPath:
    root = UPath(tmp_path_factory.mktemp("storage"))
    write_storage(root)
    return root


class Dom(HTMLParser):
    """Elements (tag, attributes, text inside) of an HTML document, with the standard library's parser."""

    VOID = frozenset({"img", "meta", "br", "link", "input", "hr", "source", "base"})

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[dict] = []
        self._open: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(el)
        if tag not in self.VOID:
            self._open.append(el)

    def handle_endtag(self, tag):
        while self._open and self._open.pop()["tag"] != tag:
            pass

    def handle_data(self, data):
        for el in self._open:
            el["text"] += data

    def find(self, tag: str, cls: str | None = None) -> list[dict]:
        return [e for e in self.elements if e["tag"] == tag and (cls is None or cls in e["attrs"].get("class", ""))]


def counted(dom: Dom) -> dict[str, dict[str, int]]:
    """{stage: {label: n}} read back from the page's count tables."""
    out: dict[str, dict[str, int]] = {}
    stage, row = None, []
    for e in dom.elements:
        if e["tag"] == "section":
            stage = e["attrs"]["data-stage"]
            out[stage] = {}
        elif e["tag"] == "tr":
            row = []
        elif e["tag"] == "td" and stage is not None:
            row.append(e["text"])
            if len(row) == 2:
                out[stage][row[0]] = int(row[1])
    return out


def assert_self_contained(dom: Dom) -> None:
    """Nothing on the page loads from anywhere: images are data: URIs, no script/link/frame, links are pages."""
    imgs = dom.find("img")
    assert imgs and all(e["attrs"]["src"].startswith("data:image/jpeg;base64,") for e in imgs)
    assert not [e for e in dom.elements if e["tag"] in ("script", "link", "iframe", "object", "embed", "base")]
    refs = [(e["tag"], k, v) for e in dom.elements for k, v in e["attrs"].items()
            if k in ("src", "href", "srcset", "poster", "data", "style") and v and "http" in v]
    assert all(tag == "a" for tag, _, _ in refs), refs
    for a in dom.find("a"):
        assert a["attrs"]["class"] == "page" and a["attrs"]["href"].startswith(("http://", "https://"))
        assert a["attrs"]["rel"] == "noopener noreferrer nofollow"
    assert "url(" not in "".join(e["text"] for e in dom.find("style"))


# --- the parts ---------------------------------------------------------------------------------------


def test_stage_counts_from_storage_and_missing_shards_listed(root):
    counts = stage_counts(PreviewSources(root), [*SHARDS, "shard-9"])
    assert {k: dict(v) for k, v in counts.stages.items()} == EXPECTED_STAGES
    assert counts.missing == {stage: ["shard-9"] for stage in EXPECTED_STAGES}


def test_sample_is_seeded_and_stable_whatever_the_shard_order_or_batching(root):
    sources = PreviewSources(root)
    tables = [(s, sources.read("conversations", s, ["id", "mix"])) for s in SHARDS]
    per_mix = Counter()
    picked = choose(tables, 3, seed=0, counts=per_mix)
    assert dict(per_mix) == RECORDS_PER_MIX
    assert sorted(picked) == sorted(MIXES) and all(len(v) == 3 for v in picked.values())
    shuffled = [(s, t.take(list(reversed(range(t.num_rows))))) for s, t in reversed(tables)]
    sliced = [(s, t.slice(i, 5)) for s, t in shuffled for i in range(0, t.num_rows, 5)]
    assert choose(shuffled, 3, seed=0) == picked == choose(sliced, 3, seed=0)
    assert choose(tables, 3, seed=1) != picked
    assert choose(tables, 3, seed=0, mixes=["mcq"]) == {"mcq": picked["mcq"]}
    assert set(choose(tables, 5, seed=0)["leaky"]) > set(picked["leaky"])  # a bigger sample extends the smaller


def test_preview_page_escapes_data_links_only_pages_and_counts(root, tmp_path):
    out = UPath(tmp_path / "release")
    summary = write_preview(PreviewSources(root), list(SHARDS), out, title="VisCon <test>", per_mix=100, seed=0)
    page = (out / "preview.html").read_text(encoding="utf-8")
    dom = Dom(page)
    assert len(summary.records) == sum(RECORDS_PER_MIX.values()) == len(dom.find("article"))
    assert_self_contained(dom)
    # model output and web text are text, not markup
    assert not dom.find("script") and 'document.title="pwned"' not in page
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    assert [e for e in dom.find("blockquote", "caption") if e["text"] == SCRIPT_CAPTION]
    assert [e for e in dom.find("li", "human") if IMG_QUESTION in e["text"]]
    assert [e for e in dom.find("span", "page") if e["text"] == JS_URL]  # not a link
    assert JS_URL not in [a["attrs"]["href"] for a in dom.find("a")]
    assert dom.find("title")[0]["text"] == "VisCon <test> — preview"
    meta = {e["attrs"].get("http-equiv"): e["attrs"].get("content") for e in dom.find("meta")}
    assert meta["Content-Security-Policy"].startswith("default-src 'none'; img-src data:")
    # the counts a person checks first
    got = counted(dom)
    assert got["conversations (records per mix)"] == RECORDS_PER_MIX
    assert {k: got[k] for k in EXPECTED_STAGES} == EXPECTED_STAGES
    # per record: page, caption from captions, turns with the Q&A leakage, lineage
    leaky = next(a for a in dom.find("article") if a["attrs"]["data-mix"] == "leaky"
                 and "marathon" in a["text"] and "example.org/page/7" in a["text"])
    assert "The Eiffel Tower at dusk during the 7th city marathon" in leaky["text"]
    assert "leakage 0.00" in leaky["text"] and "leakage 0.10" in leaky["text"] and "leakage 0.50" in leaky["text"]
    for value in ("shard-1", "teacher-vlm", "qa-llm", "caption-v1", "qa-v1"):
        assert value in leaky["text"]
    record = next(r for r in summary.records if r.id == leaky["attrs"]["id"])
    assert record.leakage == 0.2 and record.lineage["shard"] == "shard-1"
    assert str(Path(root.path)) not in page and str(tmp_path) not in page  # no path of this machine


def test_thumbnails_are_small_jpegs_and_a_missing_image_says_so(tmp_path):
    root = UPath(tmp_path / "storage")
    write_storage(root)
    rows = shard_samples()["shard-0"]
    big = io.BytesIO()
    Image.new("RGB", (800, 400), (200, 30, 30)).save(big, "PNG")
    (root / rows[2]["image_path"]).write_bytes(big.getvalue())
    (root / rows[4]["image_path"]).unlink()
    (root / rows[6]["image_path"]).write_bytes(b"not an image")
    summary = write_preview(PreviewSources(root), ["shard-0"], UPath(tmp_path / "out"), title="t", per_mix=100)
    by_image = {r.image: r for r in summary.records if r.mix == "captions"}
    thumb = by_image[rows[2]["image_path"]].thumbnail
    with Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1]))) as im:
        assert (im.format, im.size) == ("JPEG", (256, 128))
    assert by_image[rows[4]["image_path"]].thumbnail_error == "image missing from storage (not in the release)"
    assert by_image[rows[6]["image_path"]].thumbnail_error.startswith("image unreadable")
    page = (tmp_path / "out" / "preview.html").read_text()
    assert "image missing from storage (not in the release)" in page and "image unreadable" in page
    assert summary.metadata()["preview_thumbnails_missing"] == sum(
        r.image in (rows[4]["image_path"], rows[6]["image_path"]) for r in summary.records)


def test_records_markdown_one_row_per_mix_first_and_escaped():
    record = PreviewRecord(mix="leaky", id="r1", doc_url="https://example.org/a", image="i.jpg", image_url=None,
                           caption=SCRIPT_CAPTION, lineage={},
                           turns=[{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "c"},
                                  {"from": "human", "value": "Which?\nA. x"}, {"from": "gpt", "value": "A",
                                                                             "leakage": 0.25}])
    other = PreviewRecord(mix="captions", id="r2", doc_url="https://example.org/b", image="j.jpg", image_url=None,
                          caption=None, lineage={}, turns=[])
    lines = records_markdown([record, PreviewRecord(**{**record.__dict__, "id": "r3"}), other], rows=2).splitlines()
    assert lines[0] == "| mix | page | caption | first question | leakage |" and len(lines) == 4
    assert lines[2].startswith("| leaky | https://example.org/a | Fireworks &lt;script&gt;")
    assert lines[2].endswith("over the bay \\| \"harbour\" &amp; pi… | Which? A. x | 0.25 |")
    assert lines[3] == "| captions | https://example.org/b |  |  |  |"


def test_missing_conversations_file_is_a_clear_error(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no conversations/shard-9.parquet in storage"):
        write_preview(PreviewSources(root), ["shard-9"], UPath(tmp_path / "out"), title="t")


def test_empty_preview_still_renders_counts():
    page = render_preview([], PreviewCounts(records_per_mix=Counter()), "x")
    assert "<p>no records</p>" in page and 'data-stage="conversations (records per mix)"' in page


def test_control_characters_in_model_output_become_replacement_characters():
    record = PreviewRecord(mix="captions", id="r", doc_url="https://example.org/a", image="i.jpg", image_url=None,
                           caption="well\x00 train\x1b fres\ttab", lineage={},
                           turns=[{"from": "gpt", "value": "a\x07b\nc"}])
    page = render_preview([record], PreviewCounts(records_per_mix=Counter(captions=1)), "x")
    assert "\x00" not in page and "\x1b" not in page and "\x07" not in page
    assert "well\ufffd train\ufffd fres\ttab" in page and "a\ufffdb\nc" in page
