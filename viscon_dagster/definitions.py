"""The one place where assets, checks, resources, jobs and sensors meet.

Environments choose resources (storage root, S3 endpoint, tokenizer) through environment
variables or `build_definitions(...)`; asset code never does.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from viscon_dagster.assets.docs import filtered_docs
from viscon_dagster.automation import ShardSourceResource, obelics_shard_sensor
from viscon_dagster.partitions import obelics_shards
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


def build_definitions(storage_root: str | None = None, s3: S3Resource | None = None,
                      tokenizer: str | None = None) -> dg.Definitions:
    storage = StorageResource(root=storage_root, s3=s3 or s3_resource())
    shard_chain = dg.define_asset_job(SHARD_JOB, selection=dg.AssetSelection.assets(filtered_docs),
                                      partitions_def=obelics_shards,
                                      description="Every per-shard asset, for one shard partition.")
    return dg.Definitions(
        assets=[filtered_docs],
        jobs=[shard_chain],
        sensors=[obelics_shard_sensor],
        resources={
            "storage": storage,
            "io_manager": ParquetIOManager(storage=storage),
            "tokenizer": TokenizerResource(name_or_path=tokenizer),
            "shard_source": ShardSourceResource(),
        },
    )


defs = build_definitions()
