"""The one place where assets, checks, resources, jobs and sensors meet.

Environments choose resources (storage root, S3 endpoint, tokenizer) through environment
variables or `build_definitions(...)`; asset code never does.
"""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource

from viscon_dagster.assets.chain import ChainSpec, build_chain
from viscon_dagster.assets.docs import filtered_docs
from viscon_dagster.assets.images import images
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


def build_definitions(storage_root: str | None = None, s3: S3Resource | None = None,
                      tokenizer: str | None = None, fetcher: ImageFetcherResource | None = None,
                      caption_model: ModelBackend | None = None, qa_model: ModelBackend | None = None,
                      ) -> dg.Definitions:
    storage = StorageResource(root=storage_root, s3=s3 or s3_resource())
    teacher_chain = build_chain(ChainSpec(partitions_def=obelics_shards))
    assets = [filtered_docs, images, *teacher_chain]
    # the non-contextual control is materialized on request only; releases read every shard
    per_shard = [a for a in assets if a.partitions_def is not None and a.key != dg.AssetKey("noncontextual_captions")]
    releases = [a for a in assets if a.partitions_def is None]
    shard_chain = dg.define_asset_job(SHARD_JOB, selection=dg.AssetSelection.assets(*per_shard),
                                      partitions_def=obelics_shards,
                                      description="Every per-shard asset, for one shard partition.")
    release = dg.define_asset_job(RELEASE_JOB, selection=dg.AssetSelection.assets(*releases),
                                  description="Export every materialized shard's conversations.")
    return dg.Definitions(
        assets=assets,
        jobs=[shard_chain, release],
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
