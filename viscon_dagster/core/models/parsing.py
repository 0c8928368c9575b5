"""Turning model text into data: JSON extraction, schema validation, the repair prompt, refusals."""

from __future__ import annotations

import json
import re
from typing import Any

from viscon_dagster.core.models.request import Message

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)

# Openings of refusals in plain text (models without a `refusal` field). Matched at the start only,
# so a caption that merely quotes such a phrase is not taken for one.
REFUSAL_PATTERNS = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry, but|i can(?:'|no)t (?:help|assist|provide|comply|do that|"
    r"describe|identify)|i cannot (?:help|assist|provide|comply|describe|identify)|i'?m (?:unable|not able) to|"
    r"i am (?:unable|not able) to|as an ai)", re.I)


def extract_json(text: str) -> Any:
    """The first JSON object or array in `text` (bare, fenced, or embedded in prose). Raises ValueError."""
    if text is None:
        raise ValueError("no text")
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    # strict=False: raw control characters inside strings (common in model output) are accepted
    dec = json.JSONDecoder(strict=False)
    for cand in candidates:
        s = cand.strip()
        try:
            return dec.decode(s)
        except ValueError:
            pass
        for i, ch in enumerate(s):
            if ch in "{[":
                try:
                    return dec.raw_decode(s, i)[0]
                except ValueError:
                    continue
    raise ValueError("no JSON value found in the answer")


def validate(value: Any, schema: dict[str, Any]) -> str | None:
    """None when `value` satisfies `schema`, else a short reason."""
    import jsonschema

    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(root)"
        return f"{where}: {e.message}"[:500]
    return None


def parse_structured(text: str | None, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """(value, None) for schema-valid JSON in `text`, else (None, reason)."""
    try:
        value = extract_json(text)
    except ValueError as e:
        return None, str(e)
    err = validate(value, schema)
    return (None, err) if err else (value, None)


def schema_instruction(schema: dict[str, Any]) -> str:
    """Appended to the prompt where the server cannot enforce the schema itself."""
    return ("\n\nAnswer with only a JSON value, no prose, that validates against this JSON schema:\n"
            f"JSON schema: {json.dumps(schema, separators=(',', ':'))}")


def with_schema_instruction(messages: list[Message], schema: dict[str, Any]) -> list[Message]:
    """The messages with the schema instruction added to the last user turn."""
    from viscon_dagster.core.models.request import Part

    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].role == "user":
            out[i] = Message(role="user", content=[*out[i].parts(), Part.of_text(schema_instruction(schema))])
            break
    return out


def repair_messages(messages: list[Message], bad_answer: str | None, reason: str,
                    schema: dict[str, Any]) -> list[Message]:
    """One repair turn: the model sees its own answer and why it failed."""
    return [*messages, Message(role="assistant", content=bad_answer or ""),
            Message(role="user", content=(
                f"That answer is not valid: {reason}. Reply again with only the corrected JSON, "
                f"no prose, validating against this JSON schema:\n"
                f"JSON schema: {json.dumps(schema, separators=(',', ':'))}"))]


def detect_refusal(text: str | None, refusal: str | None = None, finish_reason: str | None = None) -> str | None:
    """The reason the model declined, or None."""
    if refusal:
        return refusal
    if finish_reason == "content_filter":
        return "finish_reason=content_filter"
    if text and REFUSAL_PATTERNS.match(text):
        return text.strip()[:300]
    return None
