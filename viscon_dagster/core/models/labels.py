"""How outputs and fingerprints name a model: a hub id as it is, a local checkpoint by its folder name and a digest of
its files, never by a path of the machine that ran it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

SMALL_FILE_BYTES = 1 << 20


def is_local_path(name_or_path: str) -> bool:
    """An absolute, home- or dot-relative path, or an existing folder; a hub id is `org/name` or `name`."""
    return name_or_path.startswith(("/", "~", ".")) or os.path.isdir(name_or_path)


def model_label(name_or_path: str) -> str:
    """How outputs and fingerprints name a model: a hub id as it is; a local checkpoint as `<folder>@<digest>`,
    never by a path of the machine that ran it. The digest covers the small files (configs, tokenizer) whole
    and the large ones (weights) by size, so two checkpoints that share a folder name do not share answers."""
    if not is_local_path(name_or_path):
        return name_or_path
    folder = Path(name_or_path).expanduser()
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = f.stat().st_size
        digest.update(f"{f.relative_to(folder).as_posix()}:{size}\n".encode())
        if size <= SMALL_FILE_BYTES:
            digest.update(f.read_bytes())
    return f"{folder.name}@{digest.hexdigest()[:10]}"
