"""Every knob of image acquisition, with the defaults the pipeline uses."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

PROCESS_POOL_MIN_URLS = 200  # cpu_pool="auto": a run with fewer URLs to fetch decodes in threads

DEFAULT_USER_AGENT = (
    "viscon-dagster/0.1 (research image-text dataset builder; honours robots.txt and "
    "X-Robots-Tag noai/noimageai)"
)


@dataclass(frozen=True)
class ImageSettings:
    # --- politeness
    user_agent: str = DEFAULT_USER_AGENT
    robots_token: str = "viscon-dagster"  # product token matched against robots.txt / X-Robots-Tag
    respect_robots_txt: bool = True
    x_robots_tag_directives: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
    per_host_rps: float | None = None  # requests/s per host; None: only the concurrency bound
    max_retry_after_s: float = 30.0  # a longer Retry-After gives up with the http_<code> status

    # --- speed
    concurrency: int = 64  # requests in flight, all hosts together
    per_host_concurrency: int = 8
    cpu_workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    # "process": cpu_workers processes, each fetching and decoding its own share of the URLs (no GIL shared with
    # another loop, no image bytes sent between processes: docs/benchmarks.md), the bounds for all hosts and per
    # host divided among them; "thread": this process fetches, threads decode; "auto": processes from
    # PROCESS_POOL_MIN_URLS URLs on, threads below (there the workers' start-up would dominate)
    cpu_pool: Literal["auto", "thread", "process"] = "auto"
    io_workers: int = 16  # storage writes and file:// / s3:// reads

    # --- safety
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0  # longest silence while reading
    total_timeout_s: float = 60.0  # whole request including body
    retries: int = 2  # extra attempts on timeouts, connection errors, 429 and 5xx
    retry_backoff_s: float = 0.5  # first exponential backoff step (jittered)
    max_redirects: int = 5
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 80_000_000  # decompression-bomb guard (checked from the header, before decoding)
    allowed_hosts: tuple[str, ...] = ()  # host names / IPs exempt from the SSRF guard
    allowed_networks: tuple[str, ...] = ()  # CIDRs exempt from the SSRF guard, e.g. "127.0.0.1/32"
    allowed_file_roots: tuple[str, ...] = ()  # file:// URLs only below these folders; empty: refused
    s3_storage_options: dict[str, Any] = field(default_factory=dict)  # for s3:// image URLs
    allowed_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")

    # --- normalise
    min_side: int = 150
    max_aspect_ratio: float = 3.0
    max_side: int = 1024  # long edge after resizing
    # Pillow filter for shrinking; "box" is area averaging (OpenCV's INTER_AREA, img2dataset's choice),
    # the cheapest good filter for downscaling; "bicubic" is about 2x the resize cost
    resample: Literal["lanczos", "bicubic", "bilinear", "box"] = "box"
    jpeg_quality: int = 90

    # --- dedup
    near_duplicate_distance: int = 4  # phash Hamming distance; < 0 disables near-dup detection
    frequent_url_docs: int = 10  # K: a URL in more than K documents is flagged (OBELICS: 10)
    drop_frequent_urls: bool = True  # flagged URLs are not fetched (status frequent_url)

    # --- journal
    journal_flush_rows: int = 256
    journal_flush_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host_concurrency", "cpu_workers", "io_workers", "max_side",
                     "max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.cpu_pool not in ("auto", "thread", "process"):
            raise ValueError("cpu_pool must be 'auto', 'thread' or 'process'")
        if self.resample not in ("lanczos", "bicubic", "bilinear", "box"):
            raise ValueError("resample must be one of lanczos, bicubic, bilinear, box")
        # lists from config become tuples, so the settings stay immutable
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    def normalise_fingerprint(self) -> str:
        """Identifies the settings that shape a stored image; journal rows from others are redone."""
        keys = ("max_pixels", "allowed_formats", "min_side", "max_aspect_ratio", "max_side", "resample",
                "jpeg_quality")
        blob = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
