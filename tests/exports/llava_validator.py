"""A validator for LLaVA's documented training-data format (LLaVA docs/Finetune_Custom_Data.md):
a JSON list of {"id", "image" (path relative to --image_folder), "conversations": [{"from", "value"}]},
turns alternating "human"/"gpt" from human, `<image>` once, in the first human turn."""

from __future__ import annotations

import json
from pathlib import Path


def validate_llava(records: list | object, image_folder: Path) -> list[str]:
    if not isinstance(records, list):
        return ["top level is not a list"]
    errors, ids = [], set()
    for k, r in enumerate(records):
        where = f"record {k}"
        if not isinstance(r, dict) or not {"id", "image", "conversations"} <= set(r):
            errors.append(f"{where}: missing id/image/conversations")
            continue
        if r["id"] in ids:
            errors.append(f"{where}: duplicate id {r['id']}")
        ids.add(r["id"])
        if Path(r["image"]).is_absolute() or not (image_folder / r["image"]).is_file():
            errors.append(f"{where}: image {r['image']} not found under the image folder")
        turns = r["conversations"]
        if not isinstance(turns, list) or not turns or len(turns) % 2:
            errors.append(f"{where}: conversations must be a non-empty list of human/gpt pairs")
            continue
        for i, t in enumerate(turns):
            if t.get("from") != ("human" if i % 2 == 0 else "gpt") or not isinstance(t.get("value"), str):
                errors.append(f"{where}: turn {i} is {t.get('from')!r}, expected alternating human/gpt")
        values = [t.get("value") or "" for t in turns]
        if sum(v.count("<image>") for v in values) != 1 or "<image>" not in values[0]:
            errors.append(f"{where}: <image> must appear exactly once, in the first human turn")
    return errors


def validate_llava_file(json_path: Path, image_folder: Path) -> list[str]:
    return validate_llava(json.loads(json_path.read_text(encoding="utf-8")), image_folder)
