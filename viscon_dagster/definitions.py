"""The one place where assets, checks, resources, jobs and sensors meet.

Environments choose resources (storage root, S3 endpoint, tokenizer) through environment
variables or `build_definitions(...)`; asset code never does.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from viscon_dagster.assets.docs import filtered_docs
from viscon_dagster.assets.images import images
from viscon_dagster.automation import ShardSourceResource, obelics_shard_sensor
from viscon_dagster.partitions import obelics_shards
from viscon_dagster.settings import sample_dir
from viscon_dagster.resources.image_fetcher import ImageFetcherResource
from viscon_dagster.resources.io_manager import ParquetIOManager
from viscon_dagster.resources.storage import StorageResource
from viscon_dagster.resources.tokenizer import TokenizerResource

SHARD_JOB = "shard_chain"


def _env_secret(name: str):
    """An EnvVar reference when the variable is set (its value never enters config or logs)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def s3_resource() -> S3Resource:
    return S3Resource(
        endpoint_url=os.environ.get("VISCON_S3_ENDPOINT_URL") or None,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
        aws_access_key_id=_env_secret("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env_secret("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_env_secret("AWS_SESSION_TOKEN"),
    )


def image_fetcher(**overrides) -> ImageFetcherResource:
    """file:// image URLs are read only under `VISCON_IMAGE_FILE_ROOTS` (os.pathsep-separated),
    by default the bundled sample's image folder."""
    roots = os.environ.get("VISCON_IMAGE_FILE_ROOTS")
    allowed = roots.split(os.pathsep) if roots else [str(sample_dir() / "images")]
    return ImageFetcherResource(**{"allowed_file_roots": allowed, **overrides})


def build_definitions(storage_root: str | None = None, s3: S3Resource | None = None,
                      tokenizer: str | None = None, fetcher: ImageFetcherResource | None = None,
                      ) -> dg.Definitions:
    storage = StorageResource(root=storage_root, s3=s3 or s3_resource())
    per_shard = [filtered_docs, images]
    shard_chain = dg.define_asset_job(SHARD_JOB, selection=dg.AssetSelection.assets(*per_shard),
                                      partitions_def=obelics_shards,
                                      description="Every per-shard asset, for one shard partition.")
    return dg.Definitions(
        assets=per_shard,
        jobs=[shard_chain],
        sensors=[obelics_shard_sensor],
        resources={
            "storage": storage,
            "io_manager": ParquetIOManager(storage=storage),
            "tokenizer": TokenizerResource(name_or_path=tokenizer),
            "image_fetcher": fetcher or image_fetcher(),
            "shard_source": ShardSourceResource(),
        },
    )


defs = build_definitions()
