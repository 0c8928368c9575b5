"""Training pairs for the student: each usable teacher caption with the exact request the teacher saw.

The request is rebuilt by the chain's own code (`caption_jobs` → `caption_request`: the same context
rendering, prompt version and image) and verified against the fingerprint the caption row recorded, so the
student trains on the prompt it will be served with. Pairs are split by the release's page-URL hash
(`core/exports/split.py`): the held-out split is the release's test split. An image that also sits on a
held-out page is dropped from train (recorded), so no image is seen in training and scored in evaluation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from viscon_dagster.core.chain.captions import TEACHER_DEFAULTS, caption_jobs, caption_request
from viscon_dagster.core.exports.split import DEFAULT_TEST_FRACTION, split_for
from viscon_dagster.core.files.parquet import list_parquet, partition_file, read_parquet
from viscon_dagster.core.models.request import ImageRef, Request, SamplingParams

PAIRS_SCHEMA = pa.schema([
    ("shard", pa.string()), ("doc_id", pa.string()), ("doc_url", pa.string()), ("position", pa.int32()),
    ("image_sha256", pa.string()), ("image_path", pa.string()), ("split", pa.string()),
    ("system", pa.string()), ("prompt", pa.string()), ("caption", pa.string()),
    ("teacher", pa.string()), ("prompt_version", pa.string()), ("fingerprint", pa.string()),
])
SKIPS_SCHEMA = pa.schema([("shard", pa.string()), ("doc_id", pa.string()), ("position", pa.int32()),
                          ("reason", pa.string())])
HELD_OUT = "test"


@dataclass
class PairsBuild:
    pairs: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # usable captions that did not become pairs, with why
    caption_statuses: Counter = field(default_factory=Counter)  # all teacher rows, by status
    shards: list[str] = field(default_factory=list)

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.pairs, schema=PAIRS_SCHEMA)

    def skipped_table(self) -> pa.Table:
        return pa.Table.from_pylist(self.skipped, schema=SKIPS_SCHEMA)


# a stage's storage folder in the teacher's chain, e.g. "captions" -> ["captions"] (the chain's asset key path)
Folder = Callable[[str], Sequence[str]]


def caption_shards(root, folder: Folder) -> list[str]:
    """The shards whose teacher captions are materialized in storage."""
    return [p.name.removesuffix(".parquet") for p in list_parquet(root.joinpath(*folder("captions")))]


def pair_request(pair: dict, image: ImageRef, params: SamplingParams) -> Request:
    """The caption request of a pair (the teacher's prompt and image), as the evaluation and serving send it."""
    return Request.user(pair["prompt"], images=[image], system=pair["system"], params=params,
                        meta={"doc_id": pair["doc_id"], "position": pair["position"]})


def _texts(req: Request) -> tuple[str, str]:
    system = next(m.text() for m in req.messages if m.role == "system")
    user = next(m for m in req.messages if m.role == "user")
    return system, "".join(p.text or "" for p in user.parts() if p.type == "text")


def build_pairs(root, folder: Folder, teacher_params: SamplingParams, count: Callable[[str], int] | None = None,
                context_tokens: int = TEACHER_DEFAULTS.context_tokens, test_fraction: float = DEFAULT_TEST_FRACTION,
                split_seed: int = 0) -> PairsBuild:
    out = PairsBuild(shards=caption_shards(root, folder))
    for shard in out.shards:
        captions = read_parquet(partition_file(root, folder("captions"), shard))
        docs = read_parquet(partition_file(root, folder("filtered_docs"), shard))
        images = read_parquet(partition_file(root, folder("images"), shard))
        jobs = {(j.doc_id, j.position): j
                for j in caption_jobs(docs, images, shard, True, context_tokens, count)}
        for row in captions.to_pylist():
            out.caption_statuses[row["status"]] += 1
            if row["status"] != "ok":
                continue
            skip = {"shard": shard, "doc_id": row["doc_id"], "position": row["position"]}
            job = jobs.get((row["doc_id"], row["position"]))
            if job is None:
                out.skipped.append({**skip, "reason": "the image is no longer kept in the images table"})
                continue
            image = ImageRef(url=str(root / job.image_path), sha256=job.image_sha256)
            req = caption_request(job, image, teacher_params)
            if req.fingerprint(row["caption_model"]) != row["fingerprint"]:
                out.skipped.append({**skip, "reason": "the rebuilt request differs from the teacher's (fingerprint): "
                                                      "other context budget, tokenizer or sampling settings"})
                continue
            system, prompt = _texts(req)
            out.pairs.append({
                "shard": shard, "doc_id": job.doc_id, "doc_url": job.doc_url, "position": job.position,
                "image_sha256": job.image_sha256, "image_path": job.image_path,
                "split": split_for(job.doc_url, test_fraction, split_seed),
                "system": system, "prompt": prompt, "caption": row["caption"], "teacher": row["caption_model"],
                "prompt_version": row["prompt_version"], "fingerprint": row["fingerprint"],
            })
    held_out_images = {p["image_sha256"] for p in out.pairs if p["split"] == HELD_OUT}
    kept = []
    for p in out.pairs:
        if p["split"] != HELD_OUT and p["image_sha256"] in held_out_images:
            out.skipped.append({"shard": p["shard"], "doc_id": p["doc_id"], "position": p["position"],
                                "reason": "the image also sits on a held-out page"})
        else:
            kept.append(p)
    out.pairs = kept
    return out


def leaks(table: pa.Table) -> dict[str, list[str]]:
    """Image sha256s and page URLs found in more than one split (there must be none)."""
    found: dict[str, list[str]] = {}
    for column in ("image_sha256", "doc_url"):
        splits: dict[str, set[str]] = {}
        for value, split in zip(table.column(column).to_pylist(), table.column("split").to_pylist()):
            splits.setdefault(value, set()).add(split)
        found[column] = sorted(v for v, s in splits.items() if len(s) > 1)
    return found
