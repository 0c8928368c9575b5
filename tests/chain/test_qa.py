import numpy as np
import pytest

from viscon_dagster.core.chain.leakage import leakage_score, leakage_summary
from viscon_dagster.core.chain.prompts import qa_json_schema
from viscon_dagster.core.chain.qa import validate_qa
from viscon_dagster.core.chain.question_dedup import find_duplicates
from viscon_dagster.resources.embedder import EmbedderResource

GOOD_MCQ = {"question": "Which city?", "options": ["Lisbon", "Porto", "Faro", "Braga"], "answer": "A"}


def test_valid_payload_yields_valid_items_and_mcq_answer_text():
    items = validate_qa({"free_form": [{"question": "What?", "answer": "A door."}], "mcq": [GOOD_MCQ]})
    assert [i.valid for i in items] == [True, True]
    assert items[1].answer_text == "Lisbon"


@pytest.mark.parametrize("mcq,reason", [
    ({**GOOD_MCQ, "options": ["a", "b", "c"]}, "not_four_options"),
    ({**GOOD_MCQ, "options": ["a", "b", "A", "c"]}, "duplicate_options"),
    ({**GOOD_MCQ, "options": ["a", "", "c", "d"]}, "empty_option"),
    ({**GOOD_MCQ, "answer": "E"}, "bad_answer_letter"),
    ({**GOOD_MCQ, "answer": "Lisbon"}, "bad_answer_letter"),
    ({**GOOD_MCQ, "question": " "}, "empty_question"),
    ({"question": "x", "options": "abcd", "answer": "A"}, "malformed_item"),
])
def test_each_invalid_mcq_is_recorded_with_its_reason(mcq, reason):
    (item,) = validate_qa({"free_form": [], "mcq": [mcq]})
    assert item.reason == reason


def test_invalid_free_form_and_non_object_payloads():
    items = validate_qa({"free_form": [{"question": "q", "answer": ""}, "text", {"answer": "a"}], "mcq": []})
    assert [i.reason for i in items] == ["empty_answer", "malformed_item", "empty_question"]
    assert [i.reason for i in validate_qa(["not", "a", "dict"])] == ["not_an_object"]


def test_schema_fixes_counts_options_and_letters():
    schema = qa_json_schema(3, 2)
    assert schema["properties"]["free_form"]["minItems"] == 3
    assert schema["properties"]["mcq"]["items"]["properties"]["answer"]["enum"] == ["A", "B", "C", "D"]


def test_leakage_score_measures_answer_words_found_in_caption():
    caption = "Maria Santos stands by the blue doors of the market hall in Lisbon."
    assert leakage_score("The doors are blue.", caption) == 1.0
    assert leakage_score("In Porto.", caption) == 0.0
    assert 0 < leakage_score("Lisbon, in spring.", caption) < 1
    assert leakage_summary([1.0, 0.0, 0.5])["mean"] == 0.5


def test_duplicates_within_image_then_shard():
    e = np.array([[1, 0, 0], [0.99, 0.141, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    dups = find_duplicates(e, ["img1", "img1", "img1", "img2", "img2"], threshold=0.9, block=2)
    assert [(d.index, d.duplicate_of, d.scope) for d in dups] == [(1, 0, "image"), (3, 0, "shard")]


def test_real_embedder_flags_paraphrases_not_different_questions():
    emb = EmbedderResource().embed(["What colour is the door?", "What is the color of the door?",
                                    "Where was the festival held?"])
    dups = find_duplicates(emb, ["i"] * 3, threshold=0.9)
    assert [(d.index, d.duplicate_of) for d in dups] == [(1, 0)]
