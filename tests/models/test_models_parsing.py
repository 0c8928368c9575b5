import pytest

from viscon_dagster.core.models.parsing import detect_refusal, extract_json, parse_structured

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
          "required": ["q", "n"], "additionalProperties": False}


@pytest.mark.parametrize("text", ['{"q": "x", "n": 1}', 'Sure:\n```json\n{"q": "x", "n": 1}\n```',
                                  'Here you go {"q": "x", "n": 1} hope it helps'])
def test_extract_json_finds_the_value(text):
    assert extract_json(text) == {"q": "x", "n": 1}


def test_parse_structured_reports_why():
    assert parse_structured('{"q": "x", "n": 1}', SCHEMA) == ({"q": "x", "n": 1}, None)
    value, why = parse_structured('{"q": "x"}', SCHEMA)
    assert value is None and "'n' is a required property" in why
    value, why = parse_structured('{"q": "unterminated', SCHEMA)
    assert value is None and "no JSON" in why


def test_refusals():
    assert detect_refusal("I'm sorry, but I can't help with that.")
    assert detect_refusal(None, refusal="policy")
    assert detect_refusal("ok", finish_reason="content_filter")
    assert detect_refusal("A red door; a sign says I'm sorry we're closed.") is None
