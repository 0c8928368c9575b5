"""The one place where assets, checks, resources, jobs and sensors meet.

Environments choose resources (storage root, S3 endpoint, tokenizer) through environment
variables or `build_definitions(...)`; asset code never does.
"""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource

from viscon_dagster.assets.chain import Chain, ChainSpec, build_chain
from viscon_dagster.automation import obelics_shard_sensor
from viscon_dagster.environment import env_secret, image_fetcher, model_backend, s3_resource
from viscon_dagster.partitions import obelics_shards
from viscon_dagster.resources.embedder import EmbedderResource
from viscon_dagster.resources.hub import HubResource
from viscon_dagster.resources.image_fetcher import ImageFetcherResource
from viscon_dagster.resources.io_manager import ParquetIOManager
from viscon_dagster.resources.models import ModelBackend
from viscon_dagster.resources.shard_source import ShardSourceResource
from viscon_dagster.resources.storage import StorageResource
from viscon_dagster.resources.tokenizer import TokenizerResource

SHARD_JOB = "shard_chain"
RELEASE_JOB = "release"


def chains() -> list[Chain]:
    """Every chain this code location serves (a second one is one more `build_chain(ChainSpec(...))`)."""
    return [build_chain(ChainSpec(partitions_def=obelics_shards))]


def build_definitions(storage_root: str | None = None, s3: S3Resource | None = None,
                      tokenizer: str | None = None, fetcher: ImageFetcherResource | None = None,
                      caption_model: ModelBackend | None = None, qa_model: ModelBackend | None = None,
                      ) -> dg.Definitions:
    storage = StorageResource(root=storage_root, s3=s3 or s3_resource())
    built = chains()
    return dg.Definitions(
        assets=[a for c in built for a in c.assets],
        jobs=[j for c in built for j in c.jobs],
        sensors=[obelics_shard_sensor],
        resources={
            "storage": storage,
            "io_manager": ParquetIOManager(storage=storage),
            "tokenizer": TokenizerResource(name_or_path=tokenizer),
            "image_fetcher": fetcher or image_fetcher(),
            "caption_model": caption_model or model_backend("caption"),
            "qa_model": qa_model or model_backend("qa"),
            "embedder": EmbedderResource(),
            "hub": HubResource(token=env_secret("HF_TOKEN")),
            "shard_source": ShardSourceResource(),
        },
    )


defs = build_definitions()
