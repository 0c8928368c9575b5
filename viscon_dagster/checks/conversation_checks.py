"""Data-quality suite for conversation records (blocking: exports and fine-tuning read them).

Per-row rules over the nested `conversations` list are first turned into helper columns
(`roles_alternate`, `image_tokens`, `image_in_first_turn`, `empty_turns`), which GX then checks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa

from viscon_dagster.checks.gx_runner import run_suite
from viscon_dagster.core.chain.conversations import IMAGE_TOKEN, MIXES

CONVERSATIONS_CHECK = "conversations_suite"
NOT_NULL = ("image", "shard", "doc_id", "doc_url", "image_sha256", "caption_model")


def conversations_check_spec(asset_key: str = "conversations") -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(CONVERSATIONS_CHECK, asset=asset_key, blocking=True,
                             description="unique ids, known mix, human/gpt alternating from human to gpt, "
                                         "<image> exactly once and in the first human turn, no empty turn, "
                                         "lineage present")


def roles_alternate(turns: list[dict]) -> bool:
    """human, gpt, human, gpt, … — at least one pair, ending with gpt."""
    return bool(turns) and len(turns) % 2 == 0 and all(
        t.get("from") == ("human" if i % 2 == 0 else "gpt") for i, t in enumerate(turns))


def conversation_frame(records: pa.Table | Iterable[dict[str, Any]]) -> pd.DataFrame:
    """The checked columns plus the per-row helper columns."""
    rows = records.to_pylist() if isinstance(records, pa.Table) else list(records)
    out = []
    for r in rows:
        turns = r.get("conversations") or []
        values = [t.get("value") or "" for t in turns]
        out.append({
            "id": r.get("id"), "mix": r.get("mix"), **{c: r.get(c) for c in NOT_NULL},
            "n_turns": len(turns),
            "roles_alternate": roles_alternate(turns),
            "image_tokens": sum(v.count(IMAGE_TOKEN) for v in values),
            "image_in_first_turn": bool(values) and values[0].count(IMAGE_TOKEN) == 1,
            "empty_turns": sum(not v.replace(IMAGE_TOKEN, "").strip() for v in values),
        })
    columns = ["id", "mix", *NOT_NULL, "n_turns", "roles_alternate", "image_tokens", "image_in_first_turn",
               "empty_turns"]
    return pd.DataFrame(out, columns=columns)


def conversation_expectations(mixes: Iterable[str] = MIXES):
    def build(E):
        return [
            E.ExpectColumnValuesToNotBeNull(column="id"),
            E.ExpectColumnValuesToBeUnique(column="id"),
            E.ExpectColumnValuesToBeInSet(column="mix", value_set=list(mixes)),
            *[E.ExpectColumnValuesToNotBeNull(column=c) for c in NOT_NULL],
            E.ExpectColumnValuesToBeBetween(column="n_turns", min_value=2),
            E.ExpectColumnValuesToBeInSet(column="roles_alternate", value_set=[True]),
            E.ExpectColumnValuesToBeInSet(column="image_tokens", value_set=[1]),
            E.ExpectColumnValuesToBeInSet(column="image_in_first_turn", value_set=[True]),
            E.ExpectColumnValuesToBeInSet(column="empty_turns", value_set=[0]),
        ]
    return build


def check_conversations(records: pa.Table | Iterable[dict[str, Any]], asset_key: str = "conversations",
                        mixes: Iterable[str] = MIXES) -> dg.AssetCheckResult:
    return run_suite(conversation_frame(records), "conversations", conversation_expectations(mixes),
                     asset_key, CONVERSATIONS_CHECK)
