"""Look through every file a release wrote for a path of the machine that wrote it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow.parquet as pq


def machine_paths(*extra: Path) -> set[str]:
    """The storage root and the other folders of this machine a careless writer would leak."""
    found = {str(Path.home()), tempfile.gettempdir(), os.getcwd(), *(str(p) for p in extra)}
    return {p for p in found if len(p) > 1}  # "/" alone would match every URL


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def text_of(f: Path) -> str:
    """A file's text; for parquet (compressed pages) every string value and the schema metadata."""
    if f.suffix != ".parquet":
        return f.read_bytes().decode("utf-8", errors="replace")
    table = pq.read_table(f)
    meta = [v.decode(errors="replace") for v in (table.schema.metadata or {}).values()]
    return "\n".join([*meta, *_strings(table.to_pylist())])


def files_with_paths(folder: Path, paths: set[str]) -> dict[str, list[str]]:
    """file (relative) → the machine paths it contains."""
    hits = {}
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        text = text_of(f)
        leaked = sorted(p for p in paths if p in text)
        if leaked:
            hits[str(f.relative_to(folder))] = leaked
    return hits
