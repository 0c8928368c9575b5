"""Data-quality suites for captions (blocking: Q&A is written from them)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from viscon_dagster.checks.gx_runner import run_suite
from viscon_dagster.core.chain.captions import CAPTION_STATUSES
from viscon_dagster.core.chain.text import TEXT_FIXES, UNCLEAN_REGEX

CAPTIONS_CHECK = "captions_suite"
REFUSAL_REGEX = r"(?i)^\s*(?:i'?m sorry|i am sorry|i can(?:no|')t|sorry,|as an ai)"


def captions_check_spec(asset_key) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(CAPTIONS_CHECK, asset=asset_key, blocking=True,
                             description="known statuses; usable captions non-empty, within length bounds, "
                                         "not a refusal, not a copy of the alt text; no caption holds a "
                                         "control character (but newline and tab) or U+FFFD")


def captions_expectations(min_chars: int, max_chars: int):
    def build(E):
        return [
            E.ExpectColumnValuesToBeInSet(column="status", value_set=list(CAPTION_STATUSES)),
            E.ExpectColumnValuesToNotBeNull(column="ok_caption_or_absent"),
            E.ExpectColumnValueLengthsToBeBetween(column="ok_caption", min_value=min_chars, max_value=max_chars),
            E.ExpectColumnValuesToNotMatchRegex(column="ok_caption", regex=REFUSAL_REGEX),
            E.ExpectColumnValuesToBeInSet(column="ok_copies_alt_text", value_set=[False]),
            # cleaned text only (core/chain/text.py): a caption that still holds these fails the partition
            E.ExpectColumnValuesToNotMatchRegex(column="caption", regex=UNCLEAN_REGEX),
            E.ExpectColumnValuesToBeInSet(column="text_fix", value_set=list(TEXT_FIXES)),
        ]
    return build


def _norm(text) -> str:
    return " ".join(str(text).casefold().split()) if isinstance(text, str) else ""


def check_captions(df: pd.DataFrame, min_chars: int, max_chars: int, asset_key) -> dg.AssetCheckResult:
    ok = df["status"] == "ok"
    frame = pd.DataFrame({
        "status": df["status"],
        "caption": df["caption"],  # every caption written, usable or not
        "text_fix": df["text_fix"] if "text_fix" in df else None,
        "ok_caption": df["caption"].where(ok),  # usable captions only; nulls are skipped by GX
        "ok_caption_or_absent": df["caption"].where(ok, "absent"),
        "ok_copies_alt_text": [bool(a) and _norm(c) == _norm(a) if o else None
                               for c, a, o in zip(df["caption"], df["alt_text"], ok)],
    })
    return run_suite(frame, "captions", captions_expectations(min_chars, max_chars), asset_key, CAPTIONS_CHECK)
