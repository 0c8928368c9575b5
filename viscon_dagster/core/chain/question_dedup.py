"""Stage 7: near-duplicate questions, by cosine similarity of sentence embeddings.

Questions are visited in a fixed order; one is a duplicate when a question kept before it is at
least `threshold` similar — within the same image (scope `image`) or anywhere in the shard (scope
`shard`). Similarities are computed in blocks so memory stays bounded for large shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Duplicate:
    index: int          # the dropped question
    duplicate_of: int   # the kept question it repeats
    similarity: float
    scope: str          # "image" or "shard"


def find_duplicates(embeddings: np.ndarray, groups: list[str], threshold: float = 0.9,
                    block: int = 2048) -> list[Duplicate]:
    """`embeddings` are L2-normalised rows; `groups[i]` names question i's image."""
    n = len(groups)
    if n == 0:
        return []
    emb = np.asarray(embeddings, dtype=np.float32)
    # candidate earlier neighbours above the threshold, found block by block
    neighbours: dict[int, list[tuple[int, float]]] = {}
    for start in range(0, n, block):
        sims = emb[start:start + block] @ emb[: start + block].T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if c < i:
                neighbours.setdefault(i, []).append((c, float(sims[r, c])))
    dropped: dict[int, Duplicate] = {}
    for i in range(n):
        kept = [(j, s) for j, s in neighbours.get(i, []) if j not in dropped]
        if not kept:
            continue
        same = [(j, s) for j, s in kept if groups[j] == groups[i]]
        j, s = max(same or kept, key=lambda js: (js[1], -js[0]))
        dropped[i] = Duplicate(i, j, round(s, 4), "image" if same else "shard")
    return list(dropped.values())


def mark_duplicates(rows: list[dict], embeddings: np.ndarray, threshold: float) -> list[dict]:
    """`rows` (valid Q&A rows, in a fixed order) with `kept`, `duplicate_of`, `similarity`, `dup_scope`.

    `duplicate_of` names the kept question as `<doc_id>:<position>:<kind>:<item_index>`.
    """
    found = {d.index: d for d in find_duplicates(embeddings, [r["image_sha256"] for r in rows], threshold)}
    out = []
    for i, row in enumerate(rows):
        d = found.get(i)
        kept_row = rows[d.duplicate_of] if d else None
        out.append({**row, "kept": d is None,
                    "duplicate_of": qa_key(kept_row) if kept_row else None,
                    "similarity": d.similarity if d else None, "dup_scope": d.scope if d else None})
    return out


def qa_key(row: dict) -> str:
    return f"{row['doc_id']}:{row['position']}:{row['kind']}:{row['item_index']}"
