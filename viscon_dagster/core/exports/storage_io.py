"""Storage helpers for the exports: parallel image reads, writes and folder copies through fsspec,
so the same code serves local folders and S3 prefixes (images are content-addressed files below the
storage root; a missing one drops its records instead of failing the export). Every file is written
whole (`atomic_io`), so a reader never sees a torn one."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from upath import UPath

from viscon_dagster.core.files.atomic import AtomicFile, write_bytes_atomic


def read_images(root: UPath, paths: Iterable[str], workers: int = 8) -> tuple[dict[str, bytes], set[str]]:
    """({relative path: bytes}, missing paths). Other storage errors propagate: they are systemic."""
    def read(rel: str) -> bytes | None:
        try:
            return (root / rel).read_bytes()
        except FileNotFoundError:
            return None

    paths = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        data = dict(zip(paths, pool.map(read, paths)))
    return {p: b for p, b in data.items() if b is not None}, {p for p, b in data.items() if b is None}


def write_files(folder: UPath, files: dict[str, bytes], workers: int = 8) -> None:
    def write(item: tuple[str, bytes]) -> None:
        write_bytes_atomic(folder / item[0], item[1])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(write, files.items()))


def remove_tree(path: UPath) -> None:
    if path.exists():
        path.fs.rm(path.path, recursive=True)


def file_sizes(folder: UPath) -> dict[str, int]:
    """{path relative to `folder`: bytes} for every file below it, from one listing (no per-file HEAD)."""
    if not folder.exists():
        return {}
    base = folder.path.rstrip("/") + "/"
    found = folder.fs.find(folder.path, detail=True)
    return {p[len(base):]: int(info.get("size") or 0) for p, info in sorted(found.items()) if p.startswith(base)}


def copy_tree(src: UPath, dst: UPath, workers: int = 8) -> tuple[int, int]:
    """Copy every file below `src` to the same relative path below `dst`; (files, bytes)."""
    def copy(rel: str) -> None:
        with (src / rel).open("rb") as fin, AtomicFile(dst / rel) as fout:
            shutil.copyfileobj(fin, fout, length=8 << 20)

    sizes = file_sizes(src)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(copy, sizes))
    return len(sizes), sum(sizes.values())
