"""The content hash of a model directory's weights (the captioner's data version and its name in storage), and
the copy of that directory into storage."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from viscon_dagster.core.files.atomic import is_local, local_path

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


def upload_model_dir(local: Path, dest) -> None:
    """Copy a model directory to storage (a UPath; content-addressed, so a rerun overwrites the same files) and
    check that every file arrived whole: the checkpoint is named `current` only after this returns."""
    if is_local(dest):
        target = Path(local_path(dest))
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(local, target)
        return
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for f in files:  # file by file: fsspec's recursive put nests the folder when the target already exists
        dest.fs.put_file(str(f), f"{dest.path}/{f.relative_to(local).as_posix()}")
    short = [f.relative_to(local).as_posix() for f in files
             if not (dest / f.relative_to(local).as_posix()).exists()
             or (dest / f.relative_to(local).as_posix()).stat().st_size != f.stat().st_size]
    if short:
        raise OSError(f"model upload to {dest} incomplete: {', '.join(short)} missing or short")


def local_model_dir(remote, cache: Path) -> str:
    """A local folder of a model directory in storage (a UPath): a local root in place; an S3 one downloaded once
    into `cache` (content-addressed: a complete copy never changes). The copy lands in a temporary folder and is
    renamed into place, so an interrupted download never passes for a checkpoint."""
    if is_local(remote):
        return local_path(remote)
    if not (cache / "config.json").exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
            remote.fs.get(remote.path.rstrip("/") + "/", tmp + "/model/", recursive=True)
            shutil.rmtree(cache, ignore_errors=True)
            Path(tmp, "model").rename(cache)
    return str(cache)
