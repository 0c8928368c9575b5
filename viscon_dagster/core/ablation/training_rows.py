"""A mix's training rows for conversation SFT: LLaVA/ShareGPT4V records as TRL `messages` rows with their image.

A record's turns (`{"from": "human"|"gpt", "value"}`, `<image>` once at the start of the first human turn) become
chat messages (`user` / `assistant`, the image as an `{"type": "image"}` part where `<image>` stood), the layout
TRL's vision collator and the model's chat template take; no system turn, as in LLaVA's own training. With
`assistant_only_loss` only the assistant turns carry loss (training/chat_templates.py). Written as one Hugging Face
`datasets` parquet file with an `images` column, as the captioner's rows are (core/captioner/training_data.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

IMAGE_TOKEN = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}


def to_messages(conversations: list[dict]) -> list[dict]:
    """LLaVA turns → chat messages; the image part goes where `<image>` stood (the start of the first turn)."""
    messages = []
    for i, turn in enumerate(conversations):
        role = ROLES.get(turn["from"])
        if role is None:
            raise ValueError(f"turn {i}: unknown speaker {turn['from']!r} (expected human or gpt)")
        text = turn["value"]
        parts = []
        if i == 0 and text.startswith(IMAGE_TOKEN):
            parts.append({"type": "image", "text": None})
            text = text[len(IMAGE_TOKEN):].lstrip("\n")
        elif IMAGE_TOKEN in text:
            raise ValueError(f"turn {i}: {IMAGE_TOKEN} outside the start of the first turn")
        parts.append({"type": "text", "text": text})
        messages.append({"role": role, "content": parts})
    if not messages or messages[0]["content"][0]["type"] != "image":
        raise ValueError(f"the first turn does not start with {IMAGE_TOKEN}")
    return messages


def write_conversation_file(rows: Iterable[tuple[dict, bytes]], path: str | Path, chunk_rows: int = 256) -> int:
    """One row per (record, image bytes): `messages` and `images` (one image), written in chunks with the
    `datasets` features in the schema (so `load_dataset("parquet", …)` decodes the images), a mix's images never in
    memory together. Returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features, Image, List, Value

    part = {"type": Value("string"), "text": Value("string")}
    features = Features({"messages": List({"role": Value("string"), "content": List(part)}),
                         "images": List(Image())})
    schema = features.arrow_schema
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    n, chunk = 0, []
    with pq.ParquetWriter(str(path), schema) as writer:
        for record, data in rows:
            chunk.append(features.encode_example({"messages": to_messages(record["conversations"]),
                                                  "images": [{"bytes": data, "path": None}]}))
            if len(chunk) == chunk_rows:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                n, chunk = n + len(chunk), []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            n += len(chunk)
    return n
