"""A trained model folder made portable before it is published: the files that peft and transformers write name
the base model by the path it was loaded from (`adapter_config.json`'s `base_model_name_or_path`, the adapter
card's `base_model:`), a path of the training machine. They name it by its label instead (core/models/labels)."""

from __future__ import annotations

from pathlib import Path

TEXT_SUFFIXES = {".json", ".md", ".txt", ".yaml", ".yml"}


def name_base_by_label(model_dir: Path, base_path: str, base_label: str) -> list[str]:
    """Replace `base_path` by `base_label` in the folder's text files; returns the files changed (relative)."""
    if not base_path or base_path == base_label:
        return []
    changed = []
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
        text = f.read_text(encoding="utf-8", errors="surrogateescape")
        if base_path in text:
            f.write_text(text.replace(base_path, base_label), encoding="utf-8", errors="surrogateescape")
            changed.append(f.relative_to(model_dir).as_posix())
    return changed
