"""The shard registry: which source URL each shard partition key stands for.

Dynamic partition keys carry no payload, so the URL of each registered shard is kept in storage
(`_registry/shards/<key>.json`), written by whoever registers the key (the CLI or the sensor) and
read by the assets of that partition. Registering the same key for another URL is an error: a
partition must always mean the same data.

A new shard is registered only once its parquet footer reads and holds the OBELICS columns; a
refused one is recorded with its reason (`_registry/bad_shards/<key>.json`), checked again at the
next registration and cleared once it passes.

Each set also keeps an index of its entries (`_registry/shards.index.json`: key -> URL), rewritten after each
registration that adds keys, so a registration with nothing new (every shard-sensor tick) reads one file, not one
per shard. The entries stay the record: a key listed but missing from the index (an index another registration
overwrote at the same moment, or a registry older than the index) is read from its entry and added back.

Each dataset has its own shard set (`SHARD_SETS`: VisCon-100K's `100k`, VisCon-1M's `1m`), with its own
registry folders. The sets are disjoint: a shard whose key or URL is already in another set is refused
with that reason, so no document ends up in both datasets and a key names one shard everywhere.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from upath import UPath

from viscon_dagster.core.files.atomic import is_local, write_text_atomic
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


def _index(root: UPath, shard_set: str) -> UPath:
    return root / f"{registry_dir(shard_set)}.index.json"


def registered_urls(root: UPath, shard_set: str = DEFAULT_SET) -> dict[str, str]:
    """key -> URL of every shard registered in `shard_set`: the index, with any entry it lacks read and added."""
    keys = _keys_in(root / registry_dir(shard_set))
    try:
        indexed = json.loads(_index(root, shard_set).read_text())
    except FileNotFoundError:
        indexed = {}
    urls = {k: u for k, u in indexed.items() if k in keys}
    missing = sorted(keys - urls.keys())
    read_url = lambda k: json.loads(_entry(root, k, shard_set).read_text())["url"]  # noqa: E731
    urls.update(zip(missing, _parallel(root, read_url, missing)))
    if missing:
        write_text_atomic(_index(root, shard_set), json.dumps(urls))
    return urls


def _parallel(root: UPath, fn, items: list) -> list:
    """fn over items: in threads on an object store (each a round trip: a PUT or GET on S3), in turn on a local
    folder (a file operation there is microseconds; threads would only contend for the GIL)."""
    if len(items) < 2 or is_local(root):
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(16, len(items)), thread_name_prefix="registry") as pool:
        return list(pool.map(fn, items))


def register(root: UPath, shards: list[ShardRef], source: str, shard_set: str = DEFAULT_SET,
             known: dict[str, str] | None = None) -> list[str]:
    """Record shards in `shard_set`; returns the keys that were new. `known`: `registered_urls` if already read."""
    known = registered_urls(root, shard_set) if known is None else known
    for ref in shards:
        if ref.key in known and known[ref.key] != ref.url:
            raise ShardKeyConflict(f"shard key {ref.key!r} is registered for {known[ref.key]}, not {ref.url}")
    new = [ref for ref in shards if ref.key not in known]
    if not new:
        return []
    now, folder = _now(), root / registry_dir(shard_set)
    # a local entry by its path string: a path object per entry costs ~0.1 ms, 1 s at 10,000 new shards
    entry = (lambda key: os.path.join(folder.path, f"{key}.json")) if is_local(folder) else (
        lambda key: folder / f"{key}.json")
    _parallel(root, lambda ref: write_text_atomic(entry(ref.key), json.dumps(
        {"key": ref.key, "url": ref.url, "source": source, "registered_at": now})), new)
    write_text_atomic(_index(root, shard_set), json.dumps(known | {ref.key: ref.url for ref in new}))
    return [ref.key for ref in new]


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
    try:  # names through the filesystem: a path object per entry costs ~0.1 ms, 1 s at 10,000 shards
        names = (n.rstrip("/").rsplit("/", 1)[-1] for n in folder.fs.ls(folder.path, detail=False))
        return {n.removesuffix(".json") for n in names if n.endswith(".json")}
    except (FileNotFoundError, NotADirectoryError):  # nothing recorded yet (S3 says NotADirectory)
        return set()


def _in_other_sets(root: UPath, refs: list[ShardRef], shard_set: str) -> dict[str, str]:
    """key -> why, for the refs whose key or URL another shard set already holds (read only when there are new
    refs, and only the other sets')."""
    reasons: dict[str, str] = {}
    for other in SHARD_SETS:
        if other == shard_set or not refs:
            continue
        keys_urls = registered_urls(root, other)
        keys, urls = keys_urls.keys(), {u: k for k, u in sorted(keys_urls.items())}
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
    known = registered_urls(root, shard_set)  # one listing and the index, shared with register()
    unknown = [r for r in refs if r.key not in known]
    reasons = _in_other_sets(root, unknown, shard_set)
    reasons.update(check_shards([r for r in unknown if r.key not in reasons], storage_options))
    refused = [RefusedShard(r.key, r.url, reasons[r.key]) for r in refs if r.key in reasons]
    good = [r for r in refs if r.key not in reasons]
    new = register(root, good, source, shard_set, known)
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
