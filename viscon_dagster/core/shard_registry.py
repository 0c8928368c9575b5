"""The shard registry: which source URL each shard partition key stands for.

Dynamic partition keys carry no payload, so the URL of each registered shard is kept in storage
(`_registry/shards/<key>.json`), written by whoever registers the key (the CLI or the sensor) and
read by the assets of that partition. Registering the same key for another URL is an error: a
partition must always mean the same data.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from upath import UPath

from viscon_dagster.core.atomic_io import write_text_atomic
from viscon_dagster.core.shard_sources import ShardRef

REGISTRY_DIR = "_registry/shards"


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
                                            "registered_at": datetime.now(timezone.utc).isoformat()}))
        new.append(ref.key)
    return new


def lookup(root: UPath, key: str) -> str:
    path = _entry(root, key)
    if not path.exists():
        raise KeyError(f"shard {key!r} is not registered under {root}; run `viscon shards register SOURCE`")
    return json.loads(path.read_text())["url"]
