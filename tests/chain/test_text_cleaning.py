"""Model text is cleaned where it becomes a row (captions, Q&A): ftfy, then no control character but newline and
tab, no U+FFFD; rows say what cleaning did and shards count it; the suites fail a partition whose text is not
clean; the journals keep what the model said."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
from upath import UPath

from tests.chain.scripted_openai import GOOD_CAPTION, ScriptedOpenAI, answer_for, good_qa
from tests.conftest import materialize_partition
from viscon_dagster.checks.caption_checks import check_captions
from viscon_dagster.checks.qa_checks import check_qa
from viscon_dagster.core.chain.captions import CaptionJob, caption_rows
from viscon_dagster.core.chain.qa import qa_rows
from viscon_dagster.core.chain.text import REPAIRED, UNREPAIRABLE, clean_model_text, is_unclean
from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import Response

CONTROLS = "\x00\x07\x08\x0b\x0c\x1b\x7f\x85"


@pytest.mark.parametrize(("raw", "clean", "fix"), [
    ("A harbour in Lisbon.\nBoats\tmoored.", "A harbour in Lisbon.\nBoats\tmoored.", None),  # newline, tab kept
    ("\u201cQuoted\u201d \ufb01ne \uff21", "\u201cQuoted\u201d \ufb01ne \uff21", None),  # the model's typography kept
    ("A caf\u00c3\u00a9 in Lisbon", "A café in Lisbon", REPAIRED),  # mojibake
    ("A\x00 harbour\x07 \x1b[31min\x1b[0m Lisbon\x7f", "A harbour in Lisbon", REPAIRED),  # NUL, bell, ANSI, DEL
    ("line one\r\nline two\x0bthree\x0cfour", "line one\nline two\nthree\nfour", REPAIRED),
    ("A harbour \ufffd\ufffdin Lisbon", "A harbour in Lisbon", UNREPAIRABLE),  # bytes lost before it reached us
    ("caf\u00c3\u00a9 \x00 and \ufffd", "café  and ", UNREPAIRABLE),  # loss wins over repair
])
def test_clean_model_text(raw, clean, fix):
    cleaned = clean_model_text(raw)
    assert (cleaned.text, cleaned.fix) == (clean, fix)
    assert not is_unclean(cleaned.text)


def _response(text: str | None, parsed=None, status: str = "ok") -> Response:
    return Response(fingerprint=hashlib.sha256(repr((text, parsed)).encode()).hexdigest(), model="m",
                    backend="openai", status=status, text=text, parsed=parsed)


def _job(i: int) -> CaptionJob:
    return CaptionJob("s", f"doc{i}", f"https://example.org/{i}", 0, f"https://example.org/{i}.jpg", f"{i:064x}",
                      f"images/{i}.jpg", None, None)


def test_captions_are_cleaned_before_they_are_judged():
    texts = [GOOD_CAPTION, GOOD_CAPTION.replace("Lisbon", "Lis\x00bon\x1b[0m"), GOOD_CAPTION + " \ufffd",
             "\x00\x01\x02\x1b \ufffd", "I'm sorry\x00, I can't", None]
    responses = [_response(t) for t in texts[:-1]] + [_response(None, status="refused")]
    rows = caption_rows([_job(i) for i in range(len(texts))], responses, contextual=True)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "empty", "too_short", "refused"]
    assert [r["text_fix"] for r in rows] == [None, REPAIRED, UNREPAIRABLE, UNREPAIRABLE, REPAIRED, None]
    assert rows[1]["caption"] == rows[0]["caption"] == GOOD_CAPTION and rows[2]["caption"] == GOOD_CAPTION
    check = check_captions(pd.DataFrame(rows), 20, 4000, "captions")
    assert check.passed, check.metadata["report"].value


def test_qa_items_are_cleaned_before_they_are_validated():
    qa = good_qa()
    qa["free_form"][0]["question"] = "Where\x07 was the photo taken?\x00"
    qa["free_form"][1]["answer"] = "They are \ufffdblue."
    qa["free_form"][2]["answer"] = "\x00\x1b"  # nothing left: empty_answer
    qa["mcq"][1]["options"] = ["Boats", "Boats\x00", "Tents", "Kites"]  # the same option once cleaned
    caption = {"shard": "s", "doc_id": "d", "doc_url": "u", "position": 0, "image_sha256": "x",
               "caption": GOOD_CAPTION, "fingerprint": "f"}
    rows = qa_rows(caption, _response(json.dumps(qa), qa))
    got = [(r["kind"], r["question"], r["answer"], r["reason"], r["text_fix"]) for r in rows]
    assert got == [
        ("free_form", "Where was the photo taken?", "In the harbour of Lisbon.", None, REPAIRED),
        ("free_form", "What colour are the boats?", "They are blue.", None, UNREPAIRABLE),
        ("free_form", "Which event is shown?", None, "empty_answer", REPAIRED),
        ("mcq", "Which city is shown?", "A", None, None),
        ("mcq", "What is moored in the harbour?", "B", "duplicate_options", REPAIRED),
    ]
    check = check_qa(pd.DataFrame(rows), "qa_pairs")
    assert check.passed, check.metadata["report"].value


@pytest.mark.parametrize("bad", ["\x00", "\x1b", "\x7f", "\x85", "\ufffd"])
def test_the_suites_fail_text_that_is_not_clean(bad):
    """Rows that did not go through the cleaning (older code, another writer) fail the partition's check."""
    caption = f"A harbour{bad} in Lisbon with blue fishing boats."
    frame = pd.DataFrame([{"status": "ok", "caption": caption, "alt_text": None, "text_fix": None}])
    failed = check_captions(frame, 20, 4000, "captions")
    assert not failed.passed and failed.metadata["failed_expectations"].value == 1
    assert "expect_column_values_to_not_match_regex" in failed.metadata["report"].value
    clean = check_captions(frame.assign(caption=caption.replace(bad, "\n")), 20, 4000, "captions")
    assert clean.passed
    item = {"kind": "mcq", "question": "Which city?", "answer": "A", "options": ["Lisbon", "Porto", "Faro", f"B{bad}"],
            "answer_text": "Lisbon", "valid": True, "reason": None, "text_fix": None}
    assert not check_qa(pd.DataFrame([item]), "qa_pairs").passed
    invalid = {**item, "valid": False, "reason": "duplicate_options", "question": f"Which{bad} city?",
               "options": ["Lisbon", "Porto", "Faro", "Braga"]}  # invalid items are checked too
    assert not check_qa(pd.DataFrame([invalid]), "qa_pairs").passed
    assert check_qa(pd.DataFrame([{**item, "options": ["Lisbon", "Porto", "Faro", "Braga"]}]), "qa_pairs").passed


# --- a teacher that answers with control characters, mojibake and U+FFFD, through the chain -------------------

DIRTY_CAPTIONS = {  # kind → how a good caption is spoiled (chosen by a hash of the image)
    "clean": lambda c: c,
    "controls": lambda c: c.replace("Lisbon", "Lis\x00bon\x1b[1m").replace("boats", "boats\x07\x7f"),
    "mojibake": lambda c: c.replace("harbour", "caf\u00c3\u00a9 harbour"),
    "lost": lambda c: c.replace("stone", "st\ufffdone") + " \ufffd",
}


def dirty_answer(body: dict) -> tuple[str | None, str | None]:
    content, refusal = answer_for(body)
    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
    if isinstance(user, list) and content and content.startswith(GOOD_CAPTION[:20]):  # a good caption
        kinds = sorted(DIRTY_CAPTIONS)
        kind = kinds[int(hashlib.sha256(content.encode()).hexdigest(), 16) % len(kinds)]
        return DIRTY_CAPTIONS[kind](content), refusal
    try:
        qa = json.loads(content)
    except (TypeError, ValueError):
        return content, refusal
    qa["free_form"][0]["question"] = "\x1b[31m" + qa["free_form"][0]["question"] + "\x00"
    qa["free_form"][1]["answer"] += " \ufffd"
    qa["mcq"][0]["options"][1] += "\x0b"
    return json.dumps(qa), refusal  # escaped as \u0000 … in the JSON, as a server sends them


@pytest.mark.slow
def test_a_teacher_answering_with_control_characters_gives_clean_rows_and_counts(tmp_path, sample_dir,
                                                                                 tokenizer_dir):
    from viscon_dagster.definitions import build_definitions
    from viscon_dagster.environment import image_fetcher
    from viscon_dagster.resources.models import OpenAIHTTPBackend
    from viscon_dagster.resources.shard_source import record_shards

    server = ScriptedOpenAI(answer=dirty_answer)
    base_url = server.start()
    try:
        store = tmp_path / "store"
        defs = build_definitions(
            storage_root=store.as_uri(), tokenizer=str(tokenizer_dir),
            fetcher=image_fetcher(allowed_file_roots=[str(sample_dir / "images")]),
            caption_model=OpenAIHTTPBackend(model="dirty-vlm", base_url=base_url, api_key="k", max_attempts=1),
            qa_model=OpenAIHTTPBackend(model="dirty-llm", base_url=base_url, api_key="k", max_attempts=1))
        key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
        with dg.instance_for_test() as instance:
            result = materialize_partition(defs, ["filtered_docs", "images", "captions", "qa_pairs",
                                                  "unique_qa_pairs", "conversations"], key, instance)
            assert result.success
            checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
            meta = {name: instance.get_latest_materialization_event(dg.AssetKey(name)).asset_materialization.metadata
                    for name in ("captions", "qa_pairs")}
    finally:
        server.stop()
    assert checks["captions_suite"] and checks["qa_pairs_suite"] and checks["conversations_suite"]

    captions = pq.read_table(store / "captions" / f"{key}.parquet").to_pylist()
    fixes = Counter(r["text_fix"] for r in captions)
    assert fixes[REPAIRED] > 0 and fixes[UNREPAIRABLE] > 0 and fixes[None] > 0
    assert (meta["captions"]["text_repaired"].value, meta["captions"]["text_unrepairable"].value) == \
        (fixes[REPAIRED], fixes[UNREPAIRABLE])
    ok = [r["caption"] for r in captions if r["status"] == "ok"]
    assert ok and not any(is_unclean(c) for c in ok)
    assert any("café harbour" in c for c in ok) and any("Lisbon" in c and "\x1b" not in c for c in ok)

    qa = pq.read_table(store / "qa_pairs" / f"{key}.parquet").to_pylist()
    qa_fixes = Counter(r["text_fix"] for r in qa)
    assert qa_fixes[REPAIRED] > 0 and qa_fixes[UNREPAIRABLE] > 0
    assert (meta["qa_pairs"]["text_repaired"].value, meta["qa_pairs"]["text_unrepairable"].value) == \
        (qa_fixes[REPAIRED], qa_fixes[UNREPAIRABLE])
    texts = [t for r in qa for t in (r["question"], r["answer"], *(r["options"] or [])) if t]
    assert texts and not any(is_unclean(t) for t in texts)

    conversations = pq.read_table(store / "conversations" / f"{key}.parquet")
    turns = [t["value"] for c in conversations.column("conversations").to_pylist() for t in c]
    assert turns and not any(is_unclean(t) for t in turns)

    # the pay-once journals keep what the model said, byte for byte
    said = [r.text or "" for r in Journal(UPath(store) / "captions" / "_journal" / key).load().values()]
    assert any("\x00" in t for t in said) and any("\ufffd" in t for t in said)
    said_qa = [r.text or "" for r in Journal(UPath(store) / "qa_pairs" / "_journal" / key).load().values()]
    assert any("\\u0000" in t for t in said_qa)
