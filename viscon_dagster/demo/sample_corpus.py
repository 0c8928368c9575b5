"""The bundled sample: a small OBELICS-format corpus with real image files, made offline and seeded.

`write_sample(out_dir)` writes `shards/sample-0000N.parquet` (the OBELICS schema: `texts`,
`images`, `metadata`, `general_metadata`) and `images/` (JPEG, PNG, WebP and GIF files of varied
sizes drawn with Pillow). Image URLs are `image_base_url + relative path`; by default a relative file URL
(`file:p25.jpg`), which the image fetcher resolves under its allow-listed image roots (`VISCON_IMAGE_FILE_ROOTS`,
by default the sample's images folder): no URL names the folder of the machine that wrote the sample.
Every shard also carries deliberately bad rows — one of each kind the filter must catch — and
image-level traps (missing file, tiny image, not-an-image, one image under two URLs).

With `shards_1m`, it also writes VisCon-1M's own shards, `shards_1m/sample1m-0000N.parquet`: other pages
and other images (shard numbers from `SHARD_1M_BASE`), so the two shard sets share no document.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from viscon_dagster.core.documents.obelics import END_MARKER
from viscon_dagster.demo.sample_prose import TOPICS, page_slots, paragraph, title

OBELICS_SCHEMA = pa.schema([
    ("texts", pa.list_(pa.string())), ("images", pa.list_(pa.string())),
    ("metadata", pa.string()), ("general_metadata", pa.string()),
])
FORMATS = [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif")]
# One deliberately bad row of each kind per shard, and what the filter must call it.
BAD_ROW_KINDS = {
    "length_mismatch": "length_mismatch",
    "both_text_and_image": "both_text_and_image",
    "invalid_metadata_json": "invalid_metadata_json",
    "missing_url": "missing_url",
    "no_image": "no_image",
    "no_text": "no_text",
    "over_long_text": "too_many_tokens",
    "duplicate_url": "duplicate_url",
}


@dataclass
class SampleSpec:
    shards: int = 4
    docs_per_shard: int = 72          # good documents per shard, before the bad rows
    seed: int = 0
    image_base_url: str = "file:"      # relative to the image roots the sample is served from
    draw_images: bool = True           # False: URLs only (large text-side benchmarks)
    shards_1m: int = 0                 # VisCon-1M's shards (disjoint pages and images), under shards_1m/
    docs_per_shard_1m: int | None = None  # default: docs_per_shard


SHARD_1M_BASE = 1000  # shard numbers of the 1M set in page URLs and image names (the 100K set counts from 0)


def draw_image(rng: random.Random, width: int, height: int) -> Image.Image:
    """A gradient with random shapes: real pixels, distinct per image, cheap to make."""
    c1, c2 = [tuple(rng.randint(0, 255) for _ in range(3)) for _ in range(2)]
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    img = Image.composite(Image.new("RGB", (width, height), c1), Image.new("RGB", (width, height), c2),
                          img.convert("L"))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 9)):
        x0, y0 = rng.randint(0, width - 1), rng.randint(0, height - 1)
        x1, y1 = x0 + rng.randint(5, max(6, width // 2)), y0 + rng.randint(5, max(6, height // 2))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


def save_image(img: Image.Image, path: Path, fmt: str, rng: random.Random) -> None:
    if fmt == "GIF" and rng.random() < 0.5:  # some animated GIFs: the fetcher keeps the first frame
        frames = [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    elif fmt == "PNG" and rng.random() < 0.3:
        img.convert("RGBA").save(path, format="PNG")
    else:
        img.save(path, format=fmt, **({"quality": 88} if fmt in ("JPEG", "WEBP") else {}))


class _SampleWriter:
    def __init__(self, out_dir: Path, spec: SampleSpec):
        self.out_dir, self.spec = out_dir, spec
        self.images_dir = out_dir / "images"
        self.base = spec.image_base_url
        self.rng = random.Random(spec.seed)

    def image(self, name: str, fmt_index: int, size: tuple[int, int]) -> tuple[str, int, int]:
        fmt, ext = FORMATS[fmt_index % len(FORMATS)]
        rel = f"{name}.{ext}"
        if self.spec.draw_images:
            save_image(draw_image(self.rng, *size), self.images_dir / rel, fmt, self.rng)
        return self.base + rel, size[0], size[1]

    def document(self, shard: int, i: int, n_images: int | None = None, paragraphs: int | None = None,
                 url: str | None = None) -> dict:
        rng = self.rng
        topic = rng.choice(list(TOPICS))
        slots = page_slots(rng)
        n_images = rng.randint(1, 6) if n_images is None else n_images
        n_par = paragraphs if paragraphs is not None else rng.randint(max(2, n_images), n_images + 4)
        texts: list[str | None] = [title(topic, slots)]
        images: list[str | None] = [None]
        meta: list[dict | None] = [None]
        image_slots = sorted(rng.sample(range(n_par + 1), min(n_images, n_par + 1))) if n_images else []
        for k in range(n_par + 1):
            if k in image_slots:
                name = f"s{shard}-d{i:04d}-{k}"
                long_side = rng.choice([180, 240, 320, 480, 640, 800, 1200])
                w, h = (long_side, int(long_side * rng.uniform(0.5, 1.0)))
                if rng.random() < 0.4:
                    w, h = h, w
                src, w, h = self.image(name, rng.randrange(len(FORMATS)), (w, h))
                alt = rng.choice([f"{title(topic, slots)}", f"Photo from {slots['place']}", "",
                                  f"{slots['person']} at work", f"Close-up of {slots['dish']}"])
                texts.append(None)
                images.append(src)
                meta.append({"formatted_filename": name, "alt_text": alt, "src": src,
                             "original_width": w, "original_height": h})
            if k < n_par:
                texts.append(paragraph(rng, topic, slots, rng.randint(2, 5)))
                images.append(None)
                meta.append(None)
        if rng.random() < 0.5:  # as in OBELICS, the end-of-document marker trails many pages
            last = max(j for j, t in enumerate(texts) if t is not None)
            texts[last] = texts[last] + "\n" + END_MARKER
        page = url or f"https://www.{topic}-pages.example/{slots['place'].lower().replace(' ', '-')}/{shard}-{i}"
        general = {"url": page, "warc_filename": f"crawl-data/CC-MAIN-2023-06/segments/{shard}/warc/sample.warc.gz",
                   "warc_record_offset": rng.randint(0, 10**9), "warc_record_length": rng.randint(2000, 90000)}
        return {"texts": texts, "images": images, "metadata": json.dumps(meta),
                "general_metadata": json.dumps(general)}

    def bad_rows(self, shard: int, first_good: dict) -> list[dict]:
        d = lambda i, **kw: self.document(shard, 9000 + i, **kw)  # noqa: E731
        length_mismatch = d(0)
        length_mismatch["images"] = length_mismatch["images"][:-1]
        both = d(1)
        both["texts"][both["images"].index(next(u for u in both["images"] if u))] = "caption"
        bad_meta = d(2)
        bad_meta["metadata"] = '[{"src": "broken'
        no_url = d(3)
        no_url["general_metadata"] = json.dumps({"warc_filename": "x.warc.gz"})
        no_image = d(4, n_images=0)
        no_text = d(5)
        no_text["texts"] = [END_MARKER if t is not None else None for t in no_text["texts"]]
        over_long = d(6, n_images=1, paragraphs=160)
        duplicate = dict(first_good)
        duplicate["texts"] = list(first_good["texts"]) + ["A second crawl of the same page."]
        duplicate["images"] = list(first_good["images"]) + [None]
        duplicate["metadata"] = json.dumps(json.loads(first_good["metadata"]) + [None])
        return [length_mismatch, both, bad_meta, no_url, no_image, no_text, over_long, duplicate]

    def image_traps(self, shard: int) -> dict:
        """A valid document whose images exercise the fetcher's failure statuses."""
        doc = self.document(shard, 8000, n_images=5, paragraphs=6)
        positions = [j for j, u in enumerate(doc["images"]) if u]
        meta = json.loads(doc["metadata"])
        original_url, _, _ = self.image(f"s{shard}-original", 0, (400, 300))
        tiny_url, _, _ = self.image(f"s{shard}-tiny", 0, (40, 30))
        (self.images_dir / f"s{shard}-not-an-image.jpg").write_text("<html><body>not an image</body></html>")
        twin = f"s{shard}-twin.jpg"  # the original's bytes under a second URL
        (self.images_dir / twin).write_bytes((self.images_dir / f"s{shard}-original.jpg").read_bytes())
        replacements = [original_url, self.base + f"s{shard}-missing.jpg", tiny_url,
                        self.base + f"s{shard}-not-an-image.jpg", self.base + twin]
        for j, url in zip(positions, replacements):
            doc["images"][j] = url
            meta[j]["src"] = url
        doc["metadata"] = json.dumps(meta)
        return doc

    def shard(self, shard: int, docs: int) -> pa.Table:
        good = [self.document(shard, i) for i in range(docs)]
        rows = good + self.bad_rows(shard, good[0])
        if self.spec.draw_images:
            rows.append(self.image_traps(shard))
        self.rng.shuffle(rows)
        return pa.Table.from_pylist(rows, schema=OBELICS_SCHEMA)


def write_sample(out_dir: str | Path, spec: SampleSpec | None = None) -> list[Path]:
    """Write the sample corpus; returns the (100K) shard files. Deterministic for a given spec; the 1M
    shards come after, so adding them leaves the 100K shards as they were."""
    out_dir = Path(out_dir)
    spec = spec or SampleSpec()
    writer = _SampleWriter(out_dir, spec)
    writer.images_dir.mkdir(parents=True, exist_ok=True)

    def write(folder: str, name: str, numbers: range, docs: int) -> list[Path]:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        paths = []
        for i, s in enumerate(numbers):
            path = out_dir / folder / f"{name}-{i:05d}.parquet"
            # row groups of web-corpus size: readers stream
            pq.write_table(writer.shard(s, docs), path, row_group_size=1000)
            paths.append(path)
        return paths

    paths = write("shards", "sample", range(spec.shards), spec.docs_per_shard)
    if spec.shards_1m:
        write("shards_1m", "sample1m", range(SHARD_1M_BASE, SHARD_1M_BASE + spec.shards_1m),
              spec.docs_per_shard_1m or spec.docs_per_shard)
    return paths
