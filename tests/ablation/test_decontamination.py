"""Decontamination: a planted benchmark duplicate is dropped — the same image, a resized re-encoded copy of it, and
separately the same question under another image — while clean records stay; held-out pages never reach a mix."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from viscon_dagster.core.ablation.benchmark import BENCHMARK_SCHEMA, HoldOut, Item
from viscon_dagster.core.ablation.decontam import (
    NEAR_IMAGE,
    SAME_IMAGE,
    SAME_QUESTION,
    SIMILAR_QUESTION,
    BenchmarkIndex,
    decontaminate,
    normalise_question,
    phash_of,
    question_hash,
    remaining_matches,
)
from viscon_dagster.core.chain.conversations import to_conversation


def texture(seed: int, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)).resize((size, size))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def reencoded(data: bytes) -> bytes:
    im = Image.open(io.BytesIO(data)).resize((80, 80))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    return buf.getvalue()


BENCH_Q = "What is shown on the sign?"


def bench() -> tuple[pa.Table, dict[str, bytes]]:
    images = {f"seed:{k}": texture(k) for k in range(3)}
    items = [Item(f"seed:{k}", "seed-bench", q, ["a", "b", "c", "d"], "A", images[f"seed:{k}"])
             for k, q in enumerate([BENCH_Q, "How many dogs are there?", "Which season is it?"])]
    return pa.Table.from_pylist([i.row(f"bench/{i.item_id}") for i in items], schema=BENCHMARK_SCHEMA), images


def record(rid: str, image: str, question: str, answer: str = "a sign", url: str = "https://ex.org/a") -> dict:
    return {"id": rid, "mix": "leaky", "content": "qa", "shard": "s0", "doc_id": rid, "doc_url": url,
            "image": image, "image_sha256": rid + "-sha",
            "conversations": to_conversation([(question, answer)])}


def test_question_normalisation_ignores_format_not_words():
    mcq = "What is shown on the SIGN?!\nA. a\nB. b\nC. c\nD. d\nAnswer with the option's letter from the given " \
          "choices directly."
    assert normalise_question("<image>\n" + mcq) == normalise_question(BENCH_Q) == "what is shown on the sign"
    assert question_hash("What is shown on the sign board?") != question_hash(BENCH_Q)


def test_planted_duplicates_are_dropped_and_clean_records_kept():
    items, images = bench()
    same_bytes = images["seed:1"]
    records = [
        record("dup-image", "img/dup.jpg", "Describe this image."),
        record("near-image", "img/near.jpg", "Describe this image."),
        record("dup-question", "img/q.jpg", "<image>\nWHAT is shown on the sign?"),
        record("clean", "img/clean.jpg", "What colour is the car?"),
        record("held-out", "img/other.jpg", "What colour is the bike?", url="https://held.out/page"),
    ]
    records[0]["image_sha256"] = items.column("image_sha256").to_pylist()[1]  # the very same file
    phashes = {"img/dup.jpg": phash_of(same_bytes), "img/near.jpg": phash_of(reencoded(images["seed:2"])),
               "img/q.jpg": phash_of(texture(10)), "img/clean.jpg": phash_of(texture(11)),
               "img/other.jpg": phash_of(texture(12))}
    holdout = HoldOut(test_fraction=0.0).reason
    held = lambda shard, url: "test_page" if url.startswith("https://held.out") else holdout(shard, url)  # noqa: E731
    result = decontaminate(records, BenchmarkIndex(items), held, phashes)
    why = {d["id"]: (d["reason"], d["benchmark_item"]) for d in result.dropped}
    assert why == {"dup-image": (SAME_IMAGE, "seed:1"), "near-image": (NEAR_IMAGE, "seed:2"),
                   "dup-question": (SAME_QUESTION, "seed:0"), "held-out": ("test_page", None)}
    assert [r["id"] for r in result.kept] == ["clean"]
    assert dict(result.counts) == {("leaky", SAME_IMAGE): 1, ("leaky", NEAR_IMAGE): 1, ("leaky", SAME_QUESTION): 1,
                                   ("leaky", "test_page"): 1}
    assert remaining_matches(result.kept, BenchmarkIndex(items)) == []


def test_matching_turned_off_leaves_duplicates_that_the_strict_check_finds():
    items, images = bench()
    records = [record("near-image", "img/near.jpg", "Describe this image."),
               record("dup-question", "img/q.jpg", BENCH_Q)]
    phashes = {"img/near.jpg": phash_of(reencoded(images["seed:2"])), "img/q.jpg": phash_of(texture(10))}
    loose = BenchmarkIndex(items, max_distance=-1, match_questions=False)
    result = decontaminate(records, loose, lambda s, u: None, phashes)
    assert len(result.kept) == 2
    found = {rid: m.reason for rid, m in remaining_matches(result.kept, BenchmarkIndex(items))}
    assert found == {"near-image": NEAR_IMAGE, "dup-question": SAME_QUESTION}


@pytest.mark.slow
def test_embedding_near_duplicates_when_asked():
    """The project's sentence embedder (the bundled MiniLM): a paraphrase of a benchmark question is dropped."""
    from viscon_dagster.resources.embedder import EmbedderResource

    items, _ = bench()
    embedder = EmbedderResource()
    questions = [normalise_question(q) for q in items.column("question").to_pylist()]
    index = BenchmarkIndex(items, embeddings=embedder.embed(questions), embedding_threshold=0.9)
    records = [record("paraphrase", "img/p.jpg", "What is displayed on the sign here?"),
               record("other", "img/o.jpg", "Why is the sky blue today?")]
    phashes = {"img/p.jpg": phash_of(texture(20)), "img/o.jpg": phash_of(texture(21))}
    result = decontaminate(records, index, lambda s, u: None, phashes, embed=embedder.embed)
    assert [(d["id"], d["reason"], d["benchmark_item"]) for d in result.dropped] == [
        ("paraphrase", SIMILAR_QUESTION, "seed:0")]
    assert float(result.dropped[0]["detail"].split()[-1]) >= 0.9
    assert [r["id"] for r in result.kept] == ["other"]
    without = decontaminate(records, BenchmarkIndex(items), lambda s, u: None, phashes)
    assert len(without.kept) == 2  # not the same text: only the embedding catches it


def test_random_textures_do_not_collide():
    hashes = [phash_of(texture(k)) for k in range(40)]
    index = BenchmarkIndex(pa.Table.from_pylist(
        [{"item_id": str(k), "image_sha256": str(k), "image_phash": h, "question_hash": str(k)}
         for k, h in enumerate(hashes[:20])]))
    assert all(index.image_match(None, h) is None for h in hashes[20:])  # no false near-duplicate
    assert all(index.image_match(None, h) is not None for h in hashes[:20])
