"""The image fetcher resource: the settings of image acquisition, and the one call the asset makes.

    ImageFetcherResource(...).fetch(requests, store, seen_url_counts=None, *, shard,
                                    s3_storage_options=None) -> ImageResult

All the work is `viscon_dagster.core.images.fetch_images`; this class only carries its settings as
Dagster config (defaults: `ImageSettings`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field
from upath import UPath

from viscon_dagster.core.images import ImageRequest, ImageResult, ImageSettings, fetch_images

_D = ImageSettings()


class ImageFetcherResource(dg.ConfigurableResource):
    """Fast, polite, guarded image downloads with normalisation and de-duplication (stage 3)."""

    user_agent: str = Field(_D.user_agent, description="honest User-Agent sent with every request")
    robots_token: str = Field(_D.robots_token, description="our token in robots.txt and X-Robots-Tag")
    respect_robots_txt: bool = Field(_D.respect_robots_txt, description="fetch and honour robots.txt per host")
    x_robots_tag_directives: list[str] = Field(list(_D.x_robots_tag_directives),
                                               description="X-Robots-Tag directives that opt an image out")
    per_host_rps: float | None = Field(_D.per_host_rps, description="requests per second per host; null: no limit")
    max_retry_after_s: float = Field(_D.max_retry_after_s, description="longest Retry-After waited for")
    concurrency: int = Field(_D.concurrency, description="requests in flight, all hosts together")
    per_host_concurrency: int = Field(_D.per_host_concurrency, description="requests in flight per host")
    cpu_workers: int | None = Field(None, description="worker processes (or decoding threads); null: one per CPU")
    cpu_pool: str = Field(_D.cpu_pool, description="'process' (workers fetch and decode their own URLs), 'thread' "
                          "or 'auto' (processes for 200+ URLs)")
    io_workers: int = Field(_D.io_workers, description="threads for storage writes and file/s3 reads")
    connect_timeout_s: float = Field(_D.connect_timeout_s)
    read_timeout_s: float = Field(_D.read_timeout_s, description="longest silence while reading a body")
    total_timeout_s: float = Field(_D.total_timeout_s, description="whole request, body included")
    retries: int = Field(_D.retries, description="extra attempts on timeouts, connection errors, 429, 5xx")
    retry_backoff_s: float = Field(_D.retry_backoff_s)
    max_redirects: int = Field(_D.max_redirects)
    max_bytes: int = Field(_D.max_bytes, description="largest accepted body, enforced while streaming")
    max_pixels: int = Field(_D.max_pixels, description="decompression-bomb guard, checked before decoding")
    allowed_hosts: list[str] = Field([], description="hosts/IPs exempt from the SSRF guard")
    allowed_networks: list[str] = Field([], description="CIDRs exempt from the SSRF guard")
    allowed_file_roots: list[str] = Field([], description="folders file:// image URLs may read from")
    allowed_formats: list[str] = Field(list(_D.allowed_formats), description="accepted Pillow formats")
    min_side: int = Field(_D.min_side, description="smaller images are dropped (too_small)")
    max_aspect_ratio: float = Field(_D.max_aspect_ratio, description="long/short side above this: bad_aspect")
    max_side: int = Field(_D.max_side, description="long edge of the stored image")
    resample: str = Field(_D.resample, description="shrinking filter: lanczos, bicubic, bilinear or box")
    jpeg_quality: int = Field(_D.jpeg_quality)
    near_duplicate_distance: int = Field(_D.near_duplicate_distance,
                                         description="phash Hamming distance for near duplicates; <0: off")
    frequent_url_docs: int = Field(_D.frequent_url_docs, description="K: URLs in more documents are flagged")
    drop_frequent_urls: bool = Field(_D.drop_frequent_urls, description="do not fetch flagged URLs")

    # What changes the rows or pixels `images` writes (not speed, politeness or network limits): the
    # asset's code version is derived from these, so a changed setting marks its partitions stale.
    OUTPUT_SETTINGS: ClassVar[tuple[str, ...]] = (
        "respect_robots_txt", "x_robots_tag_directives", "max_bytes", "max_pixels", "allowed_formats", "min_side",
        "max_aspect_ratio", "max_side", "resample", "jpeg_quality", "near_duplicate_distance", "frequent_url_docs",
        "drop_frequent_urls")

    def output_label(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.OUTPUT_SETTINGS}, sort_keys=True)

    def settings(self, **overrides: Any) -> ImageSettings:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(ImageSettings) if hasattr(self, f.name)}
        if values.get("cpu_workers") is None:
            values.pop("cpu_workers", None)
        values.update(overrides)
        return ImageSettings(**values)

    def fetch(self, requests: Iterable[ImageRequest], store: UPath, seen_url_counts: Mapping[str, int] | None = None,
              *, shard: str, s3_storage_options: Mapping[str, Any] | None = None) -> ImageResult:
        """Fetch one shard's images into `store` (see `viscon_dagster.core.images.acquire`)."""
        settings = self.settings(s3_storage_options=dict(s3_storage_options or {}))
        return fetch_images(requests, store, settings, seen_url_counts, shard=shard)
