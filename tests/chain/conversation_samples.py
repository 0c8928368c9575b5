"""Synthetic stage-7 samples (the conversations input) and real JPEGs for them under a storage root."""

from __future__ import annotations

import hashlib
import io
import random

from PIL import Image, ImageDraw


def jpeg(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    rng = random.Random(seed)
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.rectangle([x, y, x + 20, y + 15], fill=tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def sample(doc: int, img: int, *, shard: str = "shard-0", noncontextual: bool = True,
           n_free: int = 2, n_mcq: int = 1) -> dict:
    url = f"https://example.org/page/{doc}"
    sha = hashlib.sha256(f"image-{doc}-{img}".encode()).hexdigest()
    return {
        "shard": shard, "doc_id": hashlib.sha256(url.encode()).hexdigest()[:20], "doc_url": url,
        "image_url": f"https://cdn.example.org/{doc}/{img}.jpg", "image_sha256": sha,
        "image_path": f"images/{sha[:2]}/{sha}.jpg",
        "caption": f"The Eiffel Tower at dusk during the {doc}th city marathon, image {img}.",
        "caption_model": "teacher-vlm", "caption_prompt_version": "caption-v1",
        "noncontextual_caption": f"A tall iron tower at dusk ({img})." if noncontextual else None,
        "noncontextual_caption_model": "teacher-vlm" if noncontextual else None,
        "qa_model": "qa-llm", "qa_prompt_version": "qa-v1",
        "free_form": [{"question": f"What event is shown in picture {img} (q{k})?",
                       "answer": f"The city marathon number {doc}.", "leakage": 0.1 * k} for k in range(n_free)],
        "mcq": [{"question": f"Which landmark appears (m{k})?",
                 "options": ["Big Ben", "Eiffel Tower", "Colosseum", "Sagrada Familia"],
                 "answer": "B", "leakage": 0.5} for k in range(n_mcq)],
    }


def samples(n_docs: int = 4, images_per_doc: int = 2, shard: str = "shard-0", doc_offset: int = 0) -> list[dict]:
    return [sample(d, i, shard=shard, noncontextual=(i % 2 == 0))
            for d in range(doc_offset, doc_offset + n_docs) for i in range(images_per_doc)]


def write_images(root, rows: list[dict]) -> None:
    """Write one real JPEG per sample at `root / image_path` (root: a UPath, local or S3)."""
    for k, row in enumerate(rows):
        path = root / row["image_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(k))
