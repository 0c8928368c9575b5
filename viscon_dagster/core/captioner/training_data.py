"""The student's training rows: TRL prompt/completion rows in the chat layout the backends send.

The prompt is the teacher's request (system text; user turn = the image, then the prompt text), laid out
exactly as `TransformersLocalBackend` and the OpenAI-compatible servers render it, so the student learns on
the prompt it will be served with. The completion is the teacher's caption. With prompt/completion rows
TRL's collator masks the prompt (image tokens included): only caption tokens carry loss.

The rows are written as one Hugging Face `datasets` parquet file with an `images` column, the layout TRL's
own VLM SFT example loads too (benchmarks/training/).
"""

from __future__ import annotations

from pathlib import Path


def prompt_messages(system: str, prompt: str) -> list[dict]:
    return [{"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def completion_messages(caption: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": caption}]}]


def write_training_file(pairs: list[dict], image_bytes: list[bytes], path: str | Path) -> int:
    """One row per pair: `prompt`, `completion`, `images` (one image, as bytes). Returns the rows written."""
    from datasets import Dataset, Features, Image, List, Value

    text = {"type": Value("string"), "text": Value("string")}
    turn = List({"role": Value("string"), "content": List(text)})
    features = Features({"prompt": turn, "completion": turn, "images": List(Image())})
    data = {
        "prompt": [prompt_messages(p["system"], p["prompt"]) for p in pairs],
        "completion": [completion_messages(p["caption"]) for p in pairs],
        "images": [[{"bytes": b, "path": None}] for b in image_bytes],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(data, features=features).to_parquet(str(path))
    return len(pairs)


def load_training_file(path: str | Path):
    from datasets import load_dataset

    return load_dataset("parquet", data_files=str(path), split="train")
