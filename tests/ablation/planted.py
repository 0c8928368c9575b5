"""A planted signal for the ablation: a benchmark that asks for a property of the image the tiny model can learn
(its dominant colour), and chain outputs whose mixes teach that answer, or nothing.

The images are textured (a dominant background colour under random blocks of other colours), so no two share a
perceptual hash; the benchmark's are other images than the training ones. Every question lists the same four
colours in the same order, so the answer letter is a function of the image alone; the benchmark's answers are
balanced (a model that always says one letter scores 25%).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from viscon_dagster.core.chain.conversations import CONVERSATIONS_SCHEMA, MCQ_INSTRUCTION, to_conversation

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}
NAMES = list(COLOURS)
LETTERS = "ABCD"
TRAIN_QUESTION = "Which colour covers most of this picture?"
BENCH_QUESTION = "What is the dominant colour of the image?"
SHARDS = ("s0", "s1")


def colour_image(rng: random.Random, colour: str) -> bytes:
    a = np.zeros((64, 64, 3), np.uint8)
    a[:] = COLOURS[colour]
    for _ in range(6):
        x, y, w, h = rng.randrange(0, 56), rng.randrange(0, 56), rng.randrange(4, 12), rng.randrange(4, 12)
        a[y:y + h, x:x + w] = [rng.randrange(256) for _ in range(3)]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def mcq(question: str) -> str:
    return "\n".join([question, *(f"{letter}. {c}" for letter, c in zip(LETTERS, NAMES)), MCQ_INSTRUCTION])


def write_benchmark(folder: Path, n: int = 48, seed: int = 99) -> list[bytes]:
    """SEED-Bench's layout; returns the images (a test plants one of them in a training mix)."""
    rng = random.Random(seed)
    (folder / "SEED-Bench-image").mkdir(parents=True)
    questions, images = [], []
    for k in range(n):
        colour = NAMES[k % 4]
        data = colour_image(rng, colour)
        images.append(data)
        (folder / "SEED-Bench-image" / f"img_{k}.jpg").write_bytes(data)
        questions.append({"answer": LETTERS[k % 4], **{f"choice_{c}": name for c, name in zip("abcd", NAMES)},
                          "data_id": f"img_{k}.jpg", "data_type": "image", "question": BENCH_QUESTION,
                          "question_id": str(k), "question_type_id": 3})
    (folder / "SEED-Bench.json").write_text(json.dumps({"questions": questions,
                                                        "question_type": {"Instance Attributes": 3}}))
    return images


def write_chain(store: Path, *, teach: bool, per_shard: int = 100, seed: int = 0,
                planted_image: bytes | None = None) -> None:
    """The chain's `conversations` for SHARDS, as the chain writes them (images in storage, lineage columns), with
    two mixes: `leaky` answers the colour question right when `teach` (else with a random letter), `captions`
    always with a random letter. `planted_image` (a benchmark image) goes into one leaky record, and one captions
    record asks the benchmark's own question: decontamination must drop both."""
    rng, noise = random.Random(seed), random.Random(seed + 1000)
    for shard in SHARDS:
        rows = []
        for k in range(per_shard):
            colour = NAMES[k % 4]
            data = colour_image(rng, colour)
            if planted_image is not None and shard == SHARDS[0] and k == 0:
                data = planted_image
            sha = hashlib.sha256(data).hexdigest()
            path = f"images/{sha[:2]}/{sha}.jpg"
            (store / path).parent.mkdir(parents=True, exist_ok=True)
            (store / path).write_bytes(data)
            url = f"https://example.org/{shard}/{k}"
            lineage = {"shard": shard, "doc_id": f"{shard}-{k}", "doc_url": url, "image_url": url + ".jpg",
                       "image_sha256": sha, "caption_model": "teacher", "qa_model": "qa",
                       "caption_prompt_version": "p1", "qa_prompt_version": "q1"}
            right = LETTERS[NAMES.index(colour)]
            for mix, answer in (("leaky", right if teach else noise.choice(LETTERS)),
                                ("captions", noise.choice(LETTERS))):
                question = BENCH_QUESTION if (planted_image is not None and mix == "captions" and k == 1
                                              and shard == SHARDS[0]) else TRAIN_QUESTION
                rows.append({"id": f"{sha[:16]}-{shard}{k}-{mix}-0", "mix": mix, "content": "mcq", "image": path,
                             "conversations": to_conversation([(mcq(question), answer)]), **lineage})
        out = store / "conversations" / f"{shard}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=CONVERSATIONS_SCHEMA), out)


def register_chain(instance, shards=SHARDS) -> None:
    """The instance learns that `conversations` was materialized for the shards (the files are in storage)."""
    import dagster as dg

    instance.add_dynamic_partitions("obelics_shards", list(shards))
    for shard in shards:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="conversations", partition=shard))
