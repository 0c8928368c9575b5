"""Make the benchmark's JPEGs: N distinct photographs of varied sizes (100 KB to 2 MB).

Each file is a random crop of a real photograph (scikit-learn's bundled sample photos when
available), rescaled to a long edge of 900-2400 px, maybe mirrored, with film grain (so sizes are
those of camera JPEGs rather than of smooth upscales), saved at quality 80-92. Written once to
`benchmarks/.data/images/src/` (git-ignored) and reused.

    python benchmarks/images/make_data.py --n 5000
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from multiprocessing import Pool
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

DATA = Path(__file__).resolve().parents[1] / ".data" / "images"
_BASES: list[Image.Image] = []
_GRAIN: Image.Image | None = None


def _base_photos() -> list[Image.Image]:
    try:
        import sklearn

        folder = Path(sklearn.__file__).parent / "datasets" / "images"
        photos = [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.jpg"))]
        if photos:
            return photos
    except ImportError:
        pass
    rng = random.Random(0)  # no photographs here: random shapes
    out = []
    for _ in range(4):
        im = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
        draw = ImageDraw.Draw(im)
        for _ in range(60):
            x, y = rng.randrange(640), rng.randrange(480)
            draw.ellipse((x, y, x + rng.randrange(10, 200), y + rng.randrange(10, 200)),
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        out.append(im)
    return out


def _init() -> None:
    global _BASES, _GRAIN
    _BASES = _base_photos()
    _GRAIN = Image.merge("RGB", [Image.effect_noise((3000, 3000), 40) for _ in range(3)])


MIN_BYTES, MAX_BYTES = 100 * 1024, 2 * 1024 * 1024


def make_one(i: int) -> int:
    """Draw until the file lands in [MIN_BYTES, MAX_BYTES]."""
    for attempt in range(20):
        size = _draw(i, random.Random(i * 1000 + attempt))
        if MIN_BYTES <= size <= MAX_BYTES:
            break
    return size


def _draw(i: int, rng: random.Random) -> int:
    base = _BASES[i % len(_BASES)]
    w, h = base.size
    cw, ch = int(w * rng.uniform(0.5, 1)), int(h * rng.uniform(0.5, 1))
    x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
    scale = rng.uniform(900, 2400) / max(cw, ch)
    size = (int(cw * scale), int(ch * scale))
    im = base.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    gx, gy = rng.randrange(3000 - size[0] + 1), rng.randrange(3000 - size[1] + 1)
    grain = _GRAIN.crop((gx, gy, gx + size[0], gy + size[1]))
    im = Image.blend(im, ImageChops.add(im, grain, scale=1.0, offset=-128), rng.uniform(0.06, 0.35))
    path = DATA / "src" / f"{i:05d}.jpg"
    im.save(path, "JPEG", quality=rng.randint(80, 92))
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    (DATA / "src").mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(args.n) if not (p := DATA / "src" / f"{i:05d}.jpg").exists()
            or not MIN_BYTES <= p.stat().st_size <= MAX_BYTES]
    with Pool(args.workers, initializer=_init) as pool:
        sizes = pool.map(make_one, todo, chunksize=16)
    if sizes:
        sizes.sort()
        print(f"made {len(sizes)} JPEGs: min {sizes[0] // 1024} KB, median {sizes[len(sizes) // 2] // 1024} KB, "
              f"max {sizes[-1] // 1024} KB, total {sum(sizes) / 2**30:.2f} GiB", file=sys.stderr)


if __name__ == "__main__":
    main()
