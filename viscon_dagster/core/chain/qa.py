"""Stage 6: validating the Q&A an LLM wrote for one caption.

Every item the model returned becomes a `QAItem`, valid or with the reason it is not — invalid
items are recorded, never silently dropped. A response that is not the expected JSON object at all
yields one item of kind `response` with the reason. Every text of an item is cleaned (text.py) before it is
validated; `text_fix` says whether cleaning repaired the item's text or found characters already lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from viscon_dagster.core.chain.leakage import leakage_score
from viscon_dagster.core.chain.prompts import QA, qa_json_schema, qa_prompt
from viscon_dagster.core.chain.text import TextCleaner
from viscon_dagster.core.models.request import Request, Response, SamplingParams

MCQ_LETTERS = ("A", "B", "C", "D")  # the options of a multiple-choice question, in order
QA_REASONS = ("malformed_item", "empty_question", "empty_answer", "not_four_options", "empty_option",
              "duplicate_options", "bad_answer_letter", "not_an_object", "no_items",
              "refused", "unparsable", "error")  # the last three: the model's answer as a whole failed


@dataclass
class QAItem:
    kind: str                  # "free_form" | "mcq" | "response"
    index: int                 # position within its kind in the model's answer
    question: str
    answer: str                # free-form answer, or the MCQ letter
    options: list[str] | None
    reason: str | None = None  # None when valid
    text_fix: str | None = None  # what cleaning did to its text: None, "repaired" or "unrepairable"

    @property
    def valid(self) -> bool:
        return self.reason is None

    @property
    def answer_text(self) -> str:
        """The answer as text: for an MCQ, the option its letter names."""
        if self.kind == "mcq" and self.options and self.answer in MCQ_LETTERS[: len(self.options)]:
            return self.options[MCQ_LETTERS.index(self.answer)]
        return self.answer


def _free_form(i: int, item: Any) -> QAItem:
    if not isinstance(item, dict):
        return QAItem("free_form", i, "", "", None, "malformed_item")
    text = TextCleaner()
    q, a = text(item.get("question")), text(item.get("answer"))
    reason = "empty_question" if not q else "empty_answer" if not a else None
    return QAItem("free_form", i, q, a, None, reason, text.fix)


def _mcq(i: int, item: Any) -> QAItem:
    text = TextCleaner()
    if not isinstance(item, dict) or not isinstance(item.get("options"), list):
        return QAItem("mcq", i, text(item.get("question")) if isinstance(item, dict) else "", "", None,
                      "malformed_item", text.fix)
    q, letter = text(item.get("question")), text(item.get("answer")).upper().rstrip(".")
    options = [text(o) for o in item["options"]]
    if not q:
        reason = "empty_question"
    elif len(options) != 4:
        reason = "not_four_options"
    elif not all(options):
        reason = "empty_option"
    elif len({o.casefold() for o in options}) != 4:
        reason = "duplicate_options"
    elif letter not in MCQ_LETTERS:
        reason = "bad_answer_letter"
    else:
        reason = None
    return QAItem("mcq", i, q, letter, options, reason, text.fix)


def validate_qa(payload: Any) -> list[QAItem]:
    if not isinstance(payload, dict):
        return [QAItem("response", 0, "", "", None, "not_an_object")]
    items = [_free_form(i, x) for i, x in enumerate(payload.get("free_form") or [])]
    items += [_mcq(i, x) for i, x in enumerate(payload.get("mcq") or [])]
    return items


QA_SCHEMA = pa.schema([
    ("shard", pa.string()), ("doc_id", pa.string()), ("doc_url", pa.string()), ("position", pa.int32()),
    ("image_sha256", pa.string()), ("kind", pa.string()), ("item_index", pa.int32()),
    ("question", pa.string()), ("answer", pa.string()), ("options", pa.list_(pa.string())),
    ("answer_text", pa.string()), ("valid", pa.bool_()), ("reason", pa.string()), ("leakage", pa.float32()),
    ("qa_model", pa.string()), ("prompt_version", pa.string()), ("caption_fingerprint", pa.string()),
    ("fingerprint", pa.string()), ("from_journal", pa.bool_()),
    ("text_fix", pa.string()),  # null, "repaired" or "unrepairable" (core/chain/text.py)
])


def qa_request(caption: str, n_free: int, n_mcq: int, params: SamplingParams) -> Request:
    return Request.user(qa_prompt(caption, n_free, n_mcq), system=QA.system,
                        json_schema=qa_json_schema(n_free, n_mcq), schema_name="qa_pairs", params=params)


def qa_rows(caption: dict, response: Response) -> list[dict]:
    """Every item of one caption's answer as a row, valid or with its reason (nothing dropped)."""
    if response.ok:
        items = validate_qa(response.parsed)
        if not items:
            items = [QAItem("response", 0, "", "", None, "no_items")]
    else:  # refused, unparsable or error: one row records the failed answer
        items = [QAItem("response", 0, "", "", None, response.status)]
    base = {k: caption[k] for k in ("shard", "doc_id", "doc_url", "position", "image_sha256")}
    return [{
        **base, "kind": it.kind, "item_index": it.index, "question": it.question or None,
        "answer": it.answer or None, "options": it.options, "answer_text": it.answer_text or None,
        "valid": it.valid, "reason": it.reason,
        "leakage": leakage_score(it.answer_text, caption["caption"]) if it.valid else None,
        "qa_model": response.model, "prompt_version": QA.version,
        "caption_fingerprint": caption["fingerprint"], "fingerprint": response.fingerprint,
        "from_journal": response.cached, "text_fix": it.text_fix,
    } for it in items]
