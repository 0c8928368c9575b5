import copy

import pytest

from tests.chain.conversation_samples import samples
from viscon_dagster.checks.conversation_checks import check_conversations, conversation_frame
from viscon_dagster.core.chain.conversations import build_conversations


@pytest.fixture(scope="module")
def good():
    return build_conversations(samples(2, 2), ["leaky", "separate"]).records


def failed_expectations(result):
    return [line for line in result.metadata["report"].value.splitlines() if "FAIL" in line]


def test_suite_passes_on_built_records(good):
    result = check_conversations(good)
    assert result.passed and result.metadata["failed_expectations"].value == 0
    assert result.metadata["rows"].value == len(good)


def swap_roles(records):
    turns = records[0]["conversations"]
    turns[0]["from"], turns[1]["from"] = "gpt", "human"


def two_image_tokens(records):
    records[0]["conversations"][2]["value"] += " <image>"


def image_not_first(records):
    turns = records[0]["conversations"]
    turns[0]["value"] = turns[0]["value"].replace("<image>\n", "")
    turns[2]["value"] = "<image>\n" + turns[2]["value"]


def duplicate_id(records):
    records[1]["id"] = records[0]["id"]


def ends_with_human(records):
    records[0]["conversations"] = records[0]["conversations"][:-1]


def empty_answer(records):
    records[0]["conversations"][1]["value"] = "  "


def unknown_mix(records):
    records[0]["mix"] = "chat"


def no_doc_url(records):
    records[0]["doc_url"] = None


@pytest.mark.parametrize("corrupt,expectation,column", [
    (swap_roles, "expect_column_values_to_be_in_set", "roles_alternate"),
    (two_image_tokens, "expect_column_values_to_be_in_set", "image_tokens"),
    (duplicate_id, "expect_column_values_to_be_unique", "id"),
    (ends_with_human, "expect_column_values_to_be_in_set", "roles_alternate"),
    (empty_answer, "expect_column_values_to_be_in_set", "empty_turns"),
    (unknown_mix, "expect_column_values_to_be_in_set", "mix"),
    (no_doc_url, "expect_column_values_to_not_be_null", "doc_url"),
])
def test_suite_fails_on_each_kind_of_bad_record(good, corrupt, expectation, column):
    records = copy.deepcopy(good)
    corrupt(records)
    result = check_conversations(records)
    assert not result.passed
    failed = failed_expectations(result)
    assert len(failed) == 1 and expectation in failed[0] and f"'{column}'" in failed[0]


def test_image_moved_out_of_the_first_turn_fails(good):
    records = copy.deepcopy(good)
    image_not_first(records)
    frame = conversation_frame(records)
    assert frame.loc[0, "image_tokens"] == 1 and not frame.loc[0, "image_in_first_turn"]
    result = check_conversations(records)
    assert not result.passed and any("image_in_first_turn" in f for f in failed_expectations(result))
