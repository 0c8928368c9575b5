"""One storage root for every artifact: a local folder by default, an S3 prefix in production.

`StorageResource.root` is a URL (`file:///…` or `s3://bucket/prefix`); everything the pipeline
writes lives below it. S3 access is configured once, through dagster-aws's `S3Resource` (endpoint,
region, credentials from the environment), and handed to fsspec/s3fs as storage options so that
boto3 clients and `UPath`s see the same bucket.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field as PField
from upath import UPath

from viscon_dagster.core.files.parquet import partition_file
from viscon_dagster.paths import viscon_home
from viscon_dagster.settings import storage_root_url

ROOT_ENV = "VISCON_STORAGE_ROOT"


def default_root() -> str:
    """`$VISCON_STORAGE_ROOT` (checked: a SettingError names a bad value), else `.viscon/storage`."""
    value = os.environ.get(ROOT_ENV)
    return storage_root_url(value, ROOT_ENV) if value else (viscon_home() / "storage").as_uri()


def _is_s3(url: str) -> bool:
    return url.startswith(("s3://", "s3a://"))


class StorageResource(dg.ConfigurableResource):
    """Where artifacts live. `root` is `file:///abs/dir` (default) or `s3://bucket/prefix`."""

    root: str | None = PField(None, description="storage root URL; default $VISCON_STORAGE_ROOT or .viscon/storage")
    s3: S3Resource  # endpoint, region and credentials for s3:// roots and sources

    def __init__(self, **data):
        super().__init__(**data)
        if not isinstance(self.root, dg.EnvVar):  # an EnvVar root is checked once resolved
            _ = self.root_url  # a bad root fails where the definitions load, not at the first write

    @property
    def root_url(self) -> str:
        """The checked root URL: `file:///abs/dir` or `s3://bucket/prefix`."""
        return storage_root_url(self.root, "StorageResource.root") if self.root else default_root()

    def options_for(self, url: str) -> dict[str, Any]:
        """fsspec options for a URL: the S3 settings for s3:// URLs, nothing for local files."""
        return self.s3_options() if _is_s3(url) else {}

    def s3_options(self) -> dict[str, Any]:
        """fsspec/s3fs options from the dagster-aws S3 resource (endpoint, region, credentials)."""
        s3 = self.s3
        client_kwargs = {k: v for k, v in {"endpoint_url": s3.endpoint_url,
                                             "region_name": s3.region_name}.items() if v}
        opts: dict[str, Any] = {"client_kwargs": client_kwargs} if client_kwargs else {}
        if s3.aws_access_key_id:
            opts.update(key=s3.aws_access_key_id, secret=s3.aws_secret_access_key)
            if s3.aws_session_token:
                opts["token"] = s3.aws_session_token
        if s3.profile_name:
            opts["profile"] = s3.profile_name
        return opts

    def storage_options(self) -> dict[str, Any]:
        return self.options_for(self.root_url)

    def root_path(self) -> UPath:
        return upath_for(self.root_url, self.storage_options())

    def path(self, *parts: str) -> UPath:
        """A path below the root, e.g. `storage.path("filtered_docs_rejects", "shard-0.parquet")`."""
        p = self.root_path()
        for part in parts:
            p = p / part
        return p

    def partition_path(self, key: dg.AssetKey, partition: str) -> UPath:
        """The parquet file of one partition of an asset (`<root>/<asset key>/<partition>.parquet`)."""
        return partition_file(self.root_path(), key.path, partition)


def upath_for(url: str, storage_options: dict[str, Any] | None = None) -> UPath:
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    return UPath(url, **(storage_options or {}))

