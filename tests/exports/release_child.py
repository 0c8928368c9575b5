"""Materialize the 100K release asset on a storage root in this process, as a release run would; the tests run
it as a child process to kill it mid-release.

    python -m tests.exports.release_child <storage root URL> <shard> [<shard> …]
"""

from __future__ import annotations

import sys

import dagster as dg
from dagster_aws.s3 import S3Resource

from viscon_dagster.assets.exports import release_asset
from viscon_dagster.assets.spec import ChainSpec
from viscon_dagster.partitions import obelics_shards
from viscon_dagster.resources.hub import HubResource
from viscon_dagster.resources.storage import StorageResource

NAME = "viscon_100k_release"


def release_def() -> dg.AssetsDefinition:
    return release_asset(ChainSpec(partitions_def=obelics_shards))


def materialize(storage: StorageResource, shards: list[str], run_config: dict | None = None,
                hub: HubResource | None = None) -> dg.ExecuteInProcessResult:
    """One release run over `shards` (reported as materialized conversations partitions)."""
    with dg.instance_for_test() as instance:
        for shard in shards:
            instance.report_runless_asset_event(dg.AssetMaterialization("conversations", partition=shard))
        return dg.materialize([release_def()], instance=instance, raise_on_error=False,
                              resources={"storage": storage, "hub": hub or HubResource()},
                              run_config={"ops": {NAME: {"config": run_config or {}}}})


if __name__ == "__main__":
    root, *shards = sys.argv[1:]
    result = materialize(StorageResource(root=root, s3=S3Resource()), shards)
    sys.exit(0 if result.success else 1)
