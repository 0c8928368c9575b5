"""Say what is missing when a model or tokenizer names a local folder that is not there.

Without this, `from_pretrained('/abs/.viscon/models/tiny-lm')` on a fresh `VISCON_HOME` fails with
Hugging Face's "Repo id must be in the form 'repo_name'…", which tells a newcomer nothing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import dagster as dg

SMALL_FILE_BYTES = 1 << 20
MODEL_SETTING = "VISCON_CAPTION_MODEL / VISCON_QA_MODEL"  # where the environment names a model


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


def require_local_model(name_or_path: str, what: str, setting: str) -> None:
    """Fail with the command that makes the folder, or the setting that points elsewhere."""
    if not is_local_path(name_or_path):
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return
    raise dg.Failure(
        f"{what} {str(path)!r} does not exist. Build the tiny local models with `viscon models tiny` "
        f"(they go under $VISCON_HOME/models), or set {setting} to a hub id or a checkpoint folder.")
