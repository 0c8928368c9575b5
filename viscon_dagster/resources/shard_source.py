"""Where shards come from: the source the sensor watches (`VISCON_SHARD_SOURCE`) and the set it feeds
(`VISCON_SHARD_SET`), and the registration of a source's shards that the sensor and `viscon shards register` share."""

import os

import dagster as dg
from pydantic import Field

from viscon_dagster.core.shards.registry import DEFAULT_SET, Registration, register_source
from viscon_dagster.paths import sample_dir
from viscon_dagster.resources.storage import StorageResource

SOURCE_ENV = "VISCON_SHARD_SOURCE"
SET_ENV = "VISCON_SHARD_SET"


class ShardSourceResource(dg.ConfigurableResource):
    """The shard source the sensor watches: a local folder, an S3 prefix or an `hf://` dataset path."""

    url: str | None = Field(None, description="default $VISCON_SHARD_SOURCE, else the bundled sample's shards")
    shard_set: str | None = Field(None, description="the shard set the sensor registers into: 100k (obelics_shards) "
                                                    "or 1m (obelics_shards_1m); default $VISCON_SHARD_SET, else 100k")

    @property
    def resolved_set(self) -> str:
        from viscon_dagster.core.shards.registry import check_set

        return check_set(self.shard_set or os.environ.get(SET_ENV) or DEFAULT_SET)

    @property
    def resolved(self) -> str:
        return self.url or os.environ.get(SOURCE_ENV) or str(sample_dir() / "shards")


def register_shards(storage: StorageResource, source: str, shard_set: str = DEFAULT_SET) -> Registration:
    """Check the source's new shards and record the usable ones' URLs in the registry, the refused
    ones with their reason. `storage` must be resolved (EnvVars read), as Dagster hands it to a
    sensor or `dg.build_resources` returns it.

    Adding the keys to the instance is the caller's move (the CLI adds them directly; the sensor
    returns a request), so both paths share the listing, the checks and the registry.
    """
    return register_source(storage.root_path(), source, storage.options_for(source), shard_set)


def record_shards(storage: StorageResource, source: str, shard_set: str = DEFAULT_SET) -> list[str]:
    """`register_shards`, keeping only the registered keys (refused shards stay in the registry's record)."""
    return register_shards(storage, source, shard_set).keys
