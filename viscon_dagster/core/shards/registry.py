"""The shard registry: which source URL each shard partition key stands for.

Dynamic partition keys carry no payload, so the URL of each registered shard is kept in storage
(`_registry/shards/<key>.json`), written by whoever registers the key (the CLI or the sensor) and
read by the assets of that partition. Registering the same key for another URL is an error: a
partition must always mean the same data.

A new shard is registered only once its parquet footer reads and holds the OBELICS columns; a
refused one is recorded with its reason (`_registry/bad_shards/<key>.json`), checked again at the
next registration and cleared once it passes.

Each dataset has its own shard set (`SHARD_SETS`: VisCon-100K's `100k`, VisCon-1M's `1m`), with its own
registry folders. The sets are disjoint: a shard whose key or URL is already in another set is refused
with that reason, so no document ends up in both datasets and a key names one shard everywhere.
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
DEFAULT_SET = "100k"
# shard set -> the Dagster dynamic partitions definition of its chain (partitions.py)
SHARD_SETS = {"100k": "obelics_shards", "1m": "obelics_shards_1m"}


class ShardNotRegistered(LookupError):
    """A partition key with no registry entry (a LookupError, so its message prints without quotes)."""


class ShardKeyConflict(ValueError):
    pass


def check_set(shard_set: str) -> str:
    if shard_set not in SHARD_SETS:
        raise ValueError(f"unknown shard set {shard_set!r}: use one of {', '.join(SHARD_SETS)}")
    return shard_set


def registry_dir(shard_set: str = DEFAULT_SET) -> str:
    """`_registry/shards` for the 100K set (its historical place), `_registry/shards_<set>` for the others."""
    return REGISTRY_DIR if check_set(shard_set) == DEFAULT_SET else f"{REGISTRY_DIR}_{shard_set}"


def refused_dir(shard_set: str = DEFAULT_SET) -> str:
    return REFUSED_DIR if check_set(shard_set) == DEFAULT_SET else f"{REFUSED_DIR}_{shard_set}"


def _entry(root: UPath, key: str, shard_set: str = DEFAULT_SET) -> UPath:
    return root / registry_dir(shard_set) / f"{key}.json"


def register(root: UPath, shards: list[ShardRef], source: str, shard_set: str = DEFAULT_SET) -> list[str]:
    """Record shards in `shard_set`; returns the keys that were new."""
    new = []
    for ref in shards:
        path = _entry(root, ref.key, shard_set)
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


def _in_other_sets(root: UPath, refs: list[ShardRef], shard_set: str) -> dict[str, str]:
    """key -> why, for the refs whose key or URL another shard set already holds (entries read only when
    there are new refs, and only the other sets')."""
    reasons: dict[str, str] = {}
    for other in SHARD_SETS:
        if other == shard_set or not refs:
            continue
        folder = root / registry_dir(other)
        keys = _keys_in(folder)
        urls = {json.loads((folder / f"{k}.json").read_text())["url"]: k for k in sorted(keys)}
        for ref in refs:
            if ref.key in reasons:
                continue
            if ref.url in urls:
                reasons[ref.key] = (f"already registered in the {other} shard set as {urls[ref.url]!r}; the "
                                    f"{shard_set} set takes shards of no other set (the datasets are disjoint)")
            elif ref.key in keys:
                reasons[ref.key] = (f"the key {ref.key!r} is already a shard of the {other} shard set (for another "
                                    f"URL); rename the file: a shard key names one shard in every set")
    return reasons


def register_source(root: UPath, source: str, storage_options: dict[str, Any] | None = None,
                    shard_set: str = DEFAULT_SET) -> Registration:
    """Register the source's shards whose footer checks out in `shard_set`; record the others with their
    reason (also a shard of another set).

    Shards already registered are not read again (a sensor tick stays one listing per source)."""
    refs = list_shards(source, storage_options)
    if not refs:
        raise ValueError(f"no *.parquet shards found under {source}")
    known = _keys_in(root / registry_dir(shard_set))
    unknown = [r for r in refs if r.key not in known]
    reasons = _in_other_sets(root, unknown, shard_set)
    reasons.update(check_shards([r for r in unknown if r.key not in reasons], storage_options))
    refused = [RefusedShard(r.key, r.url, reasons[r.key]) for r in refs if r.key in reasons]
    good = [r for r in refs if r.key not in reasons]
    new = register(root, good, source, shard_set)
    bad_dir = root / refused_dir(shard_set)
    for bad in refused:
        write_text_atomic(bad_dir / f"{bad.key}.json", json.dumps(
            {"key": bad.key, "url": bad.url, "source": source, "reason": bad.reason, "checked_at": _now()}))
    for key in set(new) & _keys_in(bad_dir):
        (bad_dir / f"{key}.json").unlink(missing_ok=True)
    return Registration([r.key for r in good], new, refused)


def refused_shards(root: UPath, shard_set: str = DEFAULT_SET) -> list[RefusedShard]:
    """Every shard of `shard_set` refused at its last check, by key."""
    folder = root / refused_dir(shard_set)
    records = [json.loads((folder / f"{key}.json").read_text()) for key in sorted(_keys_in(folder))]
    return [RefusedShard(r["key"], r["url"], r["reason"]) for r in records]


def lookup(root: UPath, key: str, shard_set: str | None = None) -> str:
    """The URL of shard `key` in `shard_set`; by default in whichever set holds it (the sets never share a key)."""
    for candidate in [shard_set] if shard_set else SHARD_SETS:
        path = _entry(root, key, candidate)
        if path.exists():
            return json.loads(path.read_text())["url"]
    where = f"in the {shard_set} shard set " if shard_set else ""
    flag = f" --set {shard_set}" if shard_set and shard_set != DEFAULT_SET else ""
    raise ShardNotRegistered(f"shard {key!r} is not registered {where}under {root}: register its source with "
                             f"`viscon shards register{flag} SOURCE` (a folder, s3:// prefix or hf:// path of parquet "
                             f"shards), or `viscon demo` for the bundled sample")
