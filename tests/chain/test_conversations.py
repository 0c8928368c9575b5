import pyarrow as pa
import pytest

from tests.chain.conversation_samples import sample, samples
from viscon_dagster.checks.conversation_checks import check_conversations, roles_alternate
from viscon_dagster.core.chain.conversations import (
    CAPTION_INSTRUCTIONS,
    CONVERSATIONS_SCHEMA,
    MCQ_INSTRUCTION,
    MIXES,
    build_conversations,
    caption_instruction,
)


def by_mix(result, mix):
    return [r for r in result.records if r["mix"] == mix]


def human(record):
    return [t["value"] for t in record["conversations"] if t["from"] == "human"]


def gpt(record):
    return [t["value"] for t in record["conversations"] if t["from"] == "gpt"]


@pytest.fixture(scope="module")
def all_mixes():
    return build_conversations(samples(4, 2), MIXES, seed=3)


def test_every_record_obeys_the_format_rules(all_mixes):
    ids = [r["id"] for r in all_mixes.records]
    assert len(ids) == len(set(ids))
    for r in all_mixes.records:
        turns = r["conversations"]
        assert roles_alternate(turns)
        assert sum(t["value"].count("<image>") for t in turns) == 1
        assert turns[0]["value"].startswith("<image>\n")
    table = all_mixes.table()
    assert table.schema == CONVERSATIONS_SCHEMA and table.num_rows == len(ids)
    assert check_conversations(table).passed


def test_leaky_puts_caption_and_all_qa_in_one_record(all_mixes):
    s = samples(4, 2)[0]
    leaky = [r for r in by_mix(all_mixes, "leaky") if r["image_sha256"] == s["image_sha256"]]
    assert len(leaky) == 1
    rec = leaky[0]
    assert rec["content"] == "caption+qa"
    assert gpt(rec) == [s["caption"], *[q["answer"] for q in s["free_form"]], "B"]
    assert human(rec)[0] == "<image>\n" + caption_instruction(f"{s['image_sha256']}:{s['doc_id']}", 3)
    assert human(rec)[1] == s["free_form"][0]["question"]
    assert rec["image"] == s["image_path"] and rec["doc_url"] == s["doc_url"] and rec["qa_model"] == "qa-llm"


def test_separate_gives_two_records_and_other_mixes_one(all_mixes):
    n = 8
    counts = all_mixes.records_per_mix
    assert counts["separate"] == 2 * n
    assert all(counts[m] == n for m in ("leaky", "captions", "free_form", "mcq", "qa"))
    sep = sorted(by_mix(all_mixes, "separate"), key=lambda r: r["id"])[:2]
    assert [r["content"] for r in sep] == ["caption", "qa"]
    assert sep[0]["id"].endswith("-0") and sep[1]["id"].endswith("-1")
    assert len(sep[0]["conversations"]) == 2 and len(sep[1]["conversations"]) == 2 * 3
    assert "The Eiffel Tower" not in " ".join(t["value"] for t in sep[1]["conversations"])
    for r in by_mix(all_mixes, "captions"):
        assert len(r["conversations"]) == 2
    for r in by_mix(all_mixes, "free_form"):
        assert len(r["conversations"]) == 4 and not any("A. " in v for v in human(r))
    for r in by_mix(all_mixes, "qa"):
        assert len(r["conversations"]) == 6


def test_noncontextual_only_where_present(all_mixes):
    nc = by_mix(all_mixes, "noncontextual")
    assert len(nc) == 4 and all_mixes.skipped["noncontextual:no_noncontextual_caption"] == 4
    assert all(gpt(r)[0].startswith("A tall iron tower") for r in nc)
    with_nc = {s["image_sha256"] for s in samples(4, 2) if s["noncontextual_caption"]}
    assert {r["image_sha256"] for r in nc} == with_nc


def test_mcq_turn_lists_lettered_options_and_answers_with_the_letter(all_mixes):
    rec = by_mix(all_mixes, "mcq")[0]
    lines = rec["conversations"][0]["value"].split("\n")
    assert lines == ["<image>", "Which landmark appears (m0)?", "A. Big Ben", "B. Eiffel Tower", "C. Colosseum",
                     "D. Sagrada Familia", MCQ_INSTRUCTION]
    assert gpt(rec) == ["B"]
    long = build_conversations([sample(0, 0)], ["mcq"], mcq_answer="letter_text").records[0]
    assert gpt(long) == ["B. Eiffel Tower"]


def test_instruction_is_seeded_per_sample_and_drawn_from_a_pool():
    assert len(set(CAPTION_INSTRUCTIONS)) >= 10
    rows = samples(20, 2)
    a = build_conversations(rows, ["captions"], seed=1).records
    b = build_conversations(list(reversed(rows)), ["captions"], seed=1).records
    first = {r["id"]: r["conversations"][0]["value"] for r in a}
    assert first == {r["id"]: r["conversations"][0]["value"] for r in b}  # row order does not matter
    assert len(set(first.values())) >= 5  # 40 samples spread over the pool
    c = build_conversations(rows, ["captions"], seed=2).records
    assert first != {r["id"]: r["conversations"][0]["value"] for r in c}


def test_ids_are_stable_and_unique_for_repeated_samples():
    s = sample(1, 1)
    result = build_conversations([s, s], ["leaky", "captions"])
    ids = [r["id"] for r in result.records]
    assert len(set(ids)) == 4
    assert ids[0] == f"{s['image_sha256'][:16]}-{s['doc_id'][:8]}-leaky-0"
    assert build_conversations([s, s], ["leaky", "captions"]).records == result.records
    assert build_conversations(pa.Table.from_pylist([s, s]), ["leaky", "captions"]).records == result.records


def test_invalid_items_are_dropped_and_empty_mixes_skipped_and_counted():
    s = sample(2, 0, n_free=0, n_mcq=0)
    s["mcq"] = [{"question": "Q?", "options": ["a", "a", "b", "c"], "answer": "A", "leakage": 0},  # repeated
                {"question": "Q?", "options": ["a", "b", "c"], "answer": "A", "leakage": 0},  # three options
                {"question": "Q?", "options": ["a", "b", "c", "d"], "answer": "E", "leakage": 0}]  # bad letter
    s["free_form"] = [{"question": "  ", "answer": "x", "leakage": 0}]
    s["caption"] = "   "
    result = build_conversations([s], MIXES)
    assert result.dropped_items == {"invalid_mcq": 3, "invalid_free_form": 1}
    assert [r["mix"] for r in result.records] == ["noncontextual"]
    assert result.skipped == {"leaky:no_caption_or_qa": 1, "captions:no_caption": 1, "free_form:no_free_form": 1,
                              "mcq:no_mcq": 1, "qa:no_qa": 1, "separate:no_caption_or_qa": 1}


def test_leaky_and_separate_keep_the_half_that_exists():
    s = sample(3, 0, n_free=1, n_mcq=0)
    s["caption"] = None
    result = build_conversations([s], ["leaky", "separate"])
    assert [(r["mix"], r["content"]) for r in result.records] == [("leaky", "qa"), ("separate", "qa")]
    assert result.records[0]["conversations"][0]["value"].startswith("<image>\nWhat event")


def test_stray_image_tokens_in_model_text_are_neutralised():
    s = sample(4, 0)
    s["caption"] = "A photo <image> of a tower."
    s["free_form"][0]["answer"] = "<image>"
    result = build_conversations([s], ["leaky"])
    turns = result.records[0]["conversations"]
    assert sum(t["value"].count("<image>") for t in turns) == 1
    assert result.dropped_items["image_token_in_text"] == 2
    assert check_conversations(result.table()).passed


def test_noncontextual_record_names_the_control_captioner():
    s = sample(5, 0)
    s["noncontextual_caption_model"] = "plain-vlm"
    rec = build_conversations([s], ["noncontextual"]).records[0]
    assert rec["caption_model"] == "plain-vlm" and rec["content"] == "noncontextual_caption"
    assert rec["caption_prompt_version"] == "caption-v1"  # no control prompt version given: the sample's
    s["noncontextual_caption_prompt_version"] = "plain-v1"
    assert build_conversations([s], ["noncontextual"]).records[0]["caption_prompt_version"] == "plain-v1"


def test_unknown_mix_is_rejected():
    with pytest.raises(ValueError):
        build_conversations([sample(0, 0)], ["leaky", "bogus"])
