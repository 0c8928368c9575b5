"""The floor of the image benchmark: the same JPEGs normalised by the plainest fast code, from disk.

No network, no Dagster, no checks beyond the work itself: a process pool with one worker per core
reads each file, takes its sha256, decodes it (libjpeg DCT scaling via Pillow's `draft` when it will
be shrunk), resizes it (long edge <= 1024, area averaging, never upscaled), re-encodes it as JPEG
quality 90, takes the perceptual hash of the result (as viscon stores it, `--no-phash` to skip) and
writes it to `--out`. Prints a JSON line: images, wall seconds.

    python benchmarks/images/floor.py --src benchmarks/.data/images/src --out DIR --n 2000 [--no-phash]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from multiprocessing import get_context
from pathlib import Path

MAX_SIDE, QUALITY = 1024, 90
_OUT: Path
_PHASH = True


def _init(out: str, phash: bool) -> None:
    global _OUT, _PHASH
    _OUT, _PHASH = Path(out), phash


def one(path: str) -> int:
    import imagehash
    from PIL import Image

    data = Path(path).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    scale = min(1.0, MAX_SIDE / max(w, h))
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    if scale < 1.0:
        im.draft(None, target)
    im.load()
    if im.mode != "RGB":
        im = im.convert("RGB")
    if im.size != target:
        im = im.resize(target, Image.Resampling.BOX, reducing_gap=3.0)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=QUALITY)
    if _PHASH:
        factor = max(1, min(im.size) // 128)
        imagehash.phash(im.reduce(factor) if factor > 1 else im)
    (_OUT / f"{sha}.jpg").write_bytes(buf.getbuffer())
    return 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--no-phash", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    files = [str(p) for p in sorted(Path(args.src).glob("*.jpg"))[: args.n]]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with get_context("fork").Pool(args.workers, _init, (args.out, not args.no_phash)) as pool:
        done = sum(pool.imap_unordered(one, files, chunksize=4))
    print(json.dumps({"images": done, "wall_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
