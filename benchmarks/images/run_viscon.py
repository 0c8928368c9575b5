"""One benchmark run of viscon's fetcher (all safety features on); prints a JSON line of stats.

    python benchmarks/images/run_viscon.py --urls urls.txt --out DIR [--cpu-pool default|thread|process]
        [--cpu-workers N]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from upath import UPath

from viscon_dagster.core.images import ImageRequest, ImageSettings, fetch_images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cpu-pool", default="default", help="default: ImageSettings' own")
    parser.add_argument("--cpu-workers", type=int)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    urls = Path(args.urls).read_text().split()
    requests = [ImageRequest(f"doc{i}", f"https://example.org/{i}", 0, u) for i, u in enumerate(urls)]
    # defaults everywhere (robots.txt, X-Robots-Tag, SSRF guard, size/pixel limits, phash, dedup,
    # journal), except that the loopback benchmark server must be allow-listed
    tuning = {"cpu_pool": args.cpu_pool} if args.cpu_pool != "default" else {}
    if args.cpu_workers:
        tuning["cpu_workers"] = args.cpu_workers
    settings = ImageSettings(allowed_hosts=("127.0.0.1",), concurrency=args.concurrency, **tuning)
    started = time.perf_counter()
    result = fetch_images(requests, UPath(Path(args.out).resolve()), settings, shard="bench")
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "wall_s": wall, "cpu_s": sum(u.ru_utime + u.ru_stime for u in usage),
        "with_image": result.status_counts.get("ok", 0) + result.status_counts.get("duplicate", 0),
        "status_counts": result.status_counts, "bytes_in": result.bytes_in, "bytes_out": result.bytes_out,
    }))


if __name__ == "__main__":
    main()
