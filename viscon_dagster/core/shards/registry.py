"""The shard registry: which source URL each shard partition key stands for.

Dynamic partition keys carry no payload, so the URL of each registered shard is kept in storage
(`_registry/shards/<key>.json`), written by whoever registers the key (the CLI or the sensor) and
read by the assets of that partition. Registering the same key for another URL is an error: a
partition must always mean the same data.

A new shard is registered only once its parquet footer reads and holds the OBELICS columns; a
refused one is recorded with its reason (`_registry/bad_shards/<key>.json`), checked again at the
next registration and cleared once it passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from upath import UPath

from viscon_dagster.core.files.atomic import write_text_atomic
from viscon_dagster.core.shards.sources import ShardRef, check_shards, list_shards

REGISTRY_DIR = "_registry/shards"
REFUSED_DIR = "_registry/bad_shards"


class ShardNotRegistered(LookupError):
    """A partition key with no registry entry (a LookupError, so its message prints without quotes)."""


class ShardKeyConflict(ValueError):
    pass


def _entry(root: UPath, key: str) -> UPath:
    return root / REGISTRY_DIR / f"{key}.json"


def register(root: UPath, shards: list[ShardRef], source: str) -> list[str]:
    """Record shards; returns the keys that were new."""
    new = []
    for ref in shards:
        path = _entry(root, ref.key)
        if path.exists():
            known = json.loads(path.read_text())["url"]
            if known != ref.url:
                raise ShardKeyConflict(f"shard key {ref.key!r} is registered for {known}, not {ref.url}")
            continue
        write_text_atomic(path, json.dumps({"key": ref.key, "url": ref.url, "source": source,
                                            "registered_at": _now()}))
        new.append(ref.key)
    return new


@dataclass(frozen=True)
class RefusedShard:
    key: str
    url: str
    reason: str


@dataclass(frozen=True)
class Registration:
    keys: list[str]              # every registered shard of the source, new or known, by key
    new: list[str]               # the keys registered by this call
    refused: list[RefusedShard]  # not registered, each with its reason


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _keys_in(folder: UPath) -> set[str]:
    try:
        return {p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")}
    except (FileNotFoundError, NotADirectoryError):  # nothing recorded yet (S3 says NotADirectory)
        return set()


def register_source(root: UPath, source: str, storage_options: dict[str, Any] | None = None) -> Registration:
    """Register the source's shards whose footer checks out; record the others with their reason.

    Shards already registered are not read again (a sensor tick stays one listing per source)."""
    refs = list_shards(source, storage_options)
    if not refs:
        raise ValueError(f"no *.parquet shards found under {source}")
    known = _keys_in(root / REGISTRY_DIR)
    reasons = check_shards([r for r in refs if r.key not in known], storage_options)
    refused = [RefusedShard(r.key, r.url, reasons[r.key]) for r in refs if r.key in reasons]
    good = [r for r in refs if r.key not in reasons]
    new = register(root, good, source)
    for bad in refused:
        write_text_atomic(root / REFUSED_DIR / f"{bad.key}.json", json.dumps(
            {"key": bad.key, "url": bad.url, "source": source, "reason": bad.reason, "checked_at": _now()}))
    for key in set(new) & _keys_in(root / REFUSED_DIR):
        (root / REFUSED_DIR / f"{key}.json").unlink(missing_ok=True)
    return Registration([r.key for r in good], new, refused)


def refused_shards(root: UPath) -> list[RefusedShard]:
    """Every shard refused at its last check, by key."""
    records = [json.loads((root / REFUSED_DIR / f"{key}.json").read_text())
               for key in sorted(_keys_in(root / REFUSED_DIR))]
    return [RefusedShard(r["key"], r["url"], r["reason"]) for r in records]


def lookup(root: UPath, key: str) -> str:
    path = _entry(root, key)
    if not path.exists():
        raise ShardNotRegistered(f"shard {key!r} is not registered under {root}: register its source with "
                                 f"`viscon shards register SOURCE` (a folder, s3:// prefix or hf:// path of parquet "
                                 f"shards), or `viscon demo` for the bundled sample")
    return json.loads(path.read_text())["url"]
