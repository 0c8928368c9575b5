"""Data-quality suite for Q&A pairs (blocking: conversations are built from them)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from viscon_dagster.checks.gx_runner import run_suite
from viscon_dagster.core.chain.qa import MCQ_LETTERS, QA_REASONS
from viscon_dagster.core.chain.text import TEXT_FIXES, UNCLEAN_REGEX

QA_CHECK = "qa_pairs_suite"


def qa_check_spec(asset_key) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(QA_CHECK, asset=asset_key, blocking=True,
                             description="valid items have a question and an answer; MCQs have 4 distinct "
                                         "options and their answer among them; invalid items carry a known reason; "
                                         "no question, answer or option holds a control character (but newline "
                                         "and tab) or U+FFFD")


def qa_expectations():
    def build(E):
        return [
            E.ExpectColumnValuesToBeInSet(column="kind", value_set=["free_form", "mcq", "response"]),
            E.ExpectColumnValuesToBeInSet(column="invalid_reason", value_set=list(QA_REASONS)),
            E.ExpectColumnValueLengthsToBeBetween(column="valid_question", min_value=1),
            E.ExpectColumnValueLengthsToBeBetween(column="valid_answer_text", min_value=1),
            E.ExpectColumnValuesToBeInSet(column="mcq_letter", value_set=list(MCQ_LETTERS)),
            E.ExpectColumnValuesToBeInSet(column="mcq_distinct_options", value_set=[4]),
            E.ExpectColumnValuesToBeInSet(column="mcq_answer_among_options", value_set=[True]),
            # cleaned text only (core/chain/text.py): an item that still holds these fails the partition
            E.ExpectColumnValuesToNotMatchRegex(column="item_text", regex=UNCLEAN_REGEX),
            E.ExpectColumnValuesToBeInSet(column="text_fix", value_set=list(TEXT_FIXES)),
        ]
    return build


def check_qa(df: pd.DataFrame, asset_key) -> dg.AssetCheckResult:
    valid = df["valid"].astype(bool)
    mcq = valid & (df["kind"] == "mcq")
    options = df["options"].apply(lambda o: [] if o is None else list(o))
    texts = zip(df["question"], df["answer"], options)
    frame = pd.DataFrame({
        "kind": df["kind"],
        # every text of every item, valid or not, joined (a newline is allowed, so it cannot hide anything)
        "item_text": ["\n".join(t for t in (q, a, *o) if isinstance(t, str)) or None for q, a, o in texts],
        "text_fix": df["text_fix"] if "text_fix" in df else None,
        "invalid_reason": df["reason"].where(~valid),
        "valid_question": df["question"].where(valid),
        "valid_answer_text": df["answer_text"].where(valid),
        "mcq_letter": df["answer"].where(mcq),
        "mcq_distinct_options": [len({str(x).casefold() for x in o}) if m else None for o, m in zip(options, mcq)],
        "mcq_answer_among_options": [a in o if m else None for a, o, m in zip(df["answer_text"], options, mcq)],
    })
    return run_suite(frame, "qa_pairs", qa_expectations(), asset_key, QA_CHECK)
