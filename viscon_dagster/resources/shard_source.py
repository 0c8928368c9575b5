"""The shard source the sensor watches (`VISCON_SHARD_SOURCE`) and the shard set it feeds (`VISCON_SHARD_SET`)."""

import os

import dagster as dg
from pydantic import Field

from viscon_dagster.paths import sample_dir

SOURCE_ENV = "VISCON_SHARD_SOURCE"
SET_ENV = "VISCON_SHARD_SET"


class ShardSourceResource(dg.ConfigurableResource):
    """The shard source the sensor watches: a local folder, an S3 prefix or an `hf://` dataset path."""

    url: str | None = Field(None, description="default $VISCON_SHARD_SOURCE, else the bundled sample's shards")
    shard_set: str | None = Field(None, description="the shard set the sensor registers into: 100k (obelics_shards) "
                                                    "or 1m (obelics_shards_1m); default $VISCON_SHARD_SET, else 100k")

    @property
    def resolved_set(self) -> str:
        from viscon_dagster.core.shards.registry import DEFAULT_SET, check_set

        return check_set(self.shard_set or os.environ.get(SET_ENV) or DEFAULT_SET)

    @property
    def resolved(self) -> str:
        return self.url or os.environ.get(SOURCE_ENV) or str(sample_dir() / "shards")
