"""The content hash of a model directory's weights: the captioner's data version and its name in storage."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors",)


def weights_sha(model_dir: str | Path) -> str:
    """sha256 over the merged weight files (names and bytes, in name order), not the adapter or the configs."""
    root = Path(model_dir)
    files = sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors) in {root}")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()
