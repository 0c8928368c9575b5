"""The shard source the sensor watches (`VISCON_SHARD_SOURCE`)."""

import os

import dagster as dg
from pydantic import Field

from viscon_dagster.paths import sample_dir

SOURCE_ENV = "VISCON_SHARD_SOURCE"


class ShardSourceResource(dg.ConfigurableResource):
    """The shard source the sensor watches: a local folder, an S3 prefix or an `hf://` dataset path."""

    url: str | None = Field(None, description="default $VISCON_SHARD_SOURCE, else the bundled sample's shards")

    @property
    def resolved(self) -> str:
        return self.url or os.environ.get(SOURCE_ENV) or str(sample_dir() / "shards")
