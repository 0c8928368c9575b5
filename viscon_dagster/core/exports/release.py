"""Stage 9: conversation tables → training-ready exports, below one output folder (local or S3).

The release asset gives each release a fresh version folder as `out` and makes it current only once every
format, the card and the preview are complete (versions.py); readers go through `current_release_path`.

    <out>/llava/<mix>/<split>.json + <out>/llava/images/…      LLaVA JSON + image folder (llava.py)
    <out>/idefics/<mix>/<split>-0000N-of-0000M.parquet         chat messages, image embedded (parquet.py)
    <out>/hf/data/<mix>/<split>-0000N-of-0000M.parquet         HF dataset, one config per mix
    <out>/hf/README.md                                          its dataset card (card.py)
    <out>/llava/README.md, <out>/idefics/README.md              how to train on each format (usage.py)

One pass over the tables (one per shard, `CONVERSATIONS_SCHEMA`), in chunks: each chunk's images are
read once from `root / image` and fed to every format. The split comes from the page URL, planned first over
the pages and mixes of every table (split.py) so that each mix holds both splits where it can; every mix gets both
split files in every format. Each record carries the source image's hash
as `source_sha256` and the shipped JPEG's as `shipped_sha256` (columns.py). A record whose image is missing from
storage is dropped and counted. Each
format's folder is replaced on every run, so a rerun into the same folder never leaves stale shards behind.
`push_dataset` publishes a folder (normally `<out>/hf`) to the HF Hub or any fsspec URL; `push_release` does so
for a release version only once its manifest shows it complete.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from upath import UPath

from viscon_dagster.core.captioner.published import EVALUATION_ASSET, checkpoint_dir, read_gate
from viscon_dagster.core.exports.card import CaptionerLineage, render_card, shareable_url
from viscon_dagster.core.exports.columns import release_lineage, shipped_sha256
from viscon_dagster.core.exports.llava import LlavaWriter
from viscon_dagster.core.exports.parquet import DEFAULT_MAX_SHARD_BYTES, hf_export, idefics_export
from viscon_dagster.core.exports.split import DEFAULT_TEST_FRACTION, plan_splits
from viscon_dagster.core.exports.storage_io import copy_tree, file_sizes, read_images, remove_tree
from viscon_dagster.core.exports.usage import idefics_readme, llava_readme
from viscon_dagster.core.exports.versions import require_complete, version_path
from viscon_dagster.core.files.atomic import write_text_atomic

FORMATS = ("llava", "idefics", "hf")
CAPTIONER_LABEL = re.compile(r"contextual-captioner/([^@/]+)@([0-9a-f]{12})")
CARD_LINEAGE = ("caption_model", "qa_model", "caption_prompt_version", "qa_prompt_version", "shard")


@dataclass
class ExportSummary:
    out: str
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # format → mix → split → n
    files: dict[str, list[str]] = field(default_factory=dict)  # format → paths relative to out
    bytes: dict[str, int] = field(default_factory=dict)  # format → bytes written
    records_in: int = 0
    records_missing_image: int = 0
    missing_images: int = 0
    images: int = 0  # distinct images exported
    split_moves: dict[str, int] = field(default_factory=dict)  # pages moved to a split so every mix has both
    moved_pages: dict[str, str] = field(default_factory=dict)  # which: page url → split (split.py)

    def metadata(self) -> dict[str, Any]:
        """Flat, JSON-able values for Dagster metadata."""
        return {"out": self.out, "records_in": self.records_in, "records_missing_image": self.records_missing_image,
                "missing_images": self.missing_images, "images": self.images, "counts": self.counts,
                "bytes": self.bytes, "files": sum(len(v) for v in self.files.values()), **self.split_moves}


def _nested(counts: Counter) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (mix, split), n in sorted(counts.items()):
        out.setdefault(mix, {})[split] = n
    return out


# the conversation tables, or a function giving them anew (with only `columns` when it is given)
Tables = Iterable[pa.Table] | Callable[[list[str] | None], Iterable[pa.Table]]


def _reader(tables: Tables) -> Callable[[list[str] | None], Iterable[pa.Table]]:
    """Tables that can be read twice (the split is planned over them first)."""
    if callable(tables):
        return tables
    kept = tables if isinstance(tables, list | tuple) else list(tables)
    return lambda columns=None: (t.select(columns) if columns else t for t in kept)


def export_conversations(tables: Tables, root: UPath, out: UPath, *,
                         formats: Iterable[str] = FORMATS, mixes: Iterable[str] | None = None,
                         test_fraction: float = DEFAULT_TEST_FRACTION, split_seed: int = 0,
                         max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, chunk_rows: int = 256,
                         workers: int = 8, leakage: dict[str, Any] | None = None,
                         pretty_name: str = "VisCon (reproduction)", default_mix: str = "leaky",
                         version: str | None = None, release_name: str | None = None,
                         card_notes: str = "", card_banner: str = "") -> ExportSummary:
    """Write the chosen formats for `tables` below `out`; images are read from `root / image`.

    `tables` are read again after the split is planned over them: a function giving them anew (`columns` →
    tables) reads only the columns the plan needs for it. `mixes` limits the export to those mixes (default: every
    mix in the tables).
    `leakage` is the precomputed Q&A leakage summary for the card (`export_card.leakage_by_kind` or
    `core.chain.leakage.leakage_summary`). `version` (the release version id) and `release_name` (its folder's
    name) are named on the card and in the formats' READMEs.
    """
    formats = list(dict.fromkeys(formats))
    if unknown := set(formats) - set(FORMATS):
        raise ValueError(f"unknown export formats {sorted(unknown)} (known: {FORMATS})")
    wanted = set(mixes) if mixes is not None else None
    for f in formats:
        remove_tree(out / f)
    writers = {"llava": lambda: LlavaWriter(out, workers),
               "idefics": lambda: idefics_export(out, max_shard_bytes),
               "hf": lambda: hf_export(out, max_shard_bytes)}
    read = _reader(tables)

    def page_mixes():
        for t in read(["doc_url", "mix"]):
            yield [(u, m) for u, m in zip(t["doc_url"].to_pylist(), t["mix"].to_pylist())
                   if wanted is None or m in wanted]

    plan = plan_splits(page_mixes, test_fraction, split_seed)
    active = {f: writers[f]() for f in formats}
    summary = ExportSummary(out=str(out), split_moves=plan.metadata(), moved_pages=dict(plan.moved))
    lineage: dict[str, set[str]] = {c: set() for c in CARD_LINEAGE}
    exported_images: set[str] = set()
    missing_images: set[str] = set()
    shipped: dict[str, str] = {}  # image path → SHA-256 of the bytes shipped
    for table in read(None):
        for batch in table.to_batches(max_chunksize=chunk_rows):
            rows = [r for r in batch.to_pylist() if wanted is None or r["mix"] in wanted]
            summary.records_in += len(rows)
            images, missing = read_images(root, (r["image"] for r in rows), workers)
            missing_images |= missing
            for path, data in images.items():
                if path not in shipped:
                    shipped[path] = shipped_sha256(data)
            ok = [release_lineage(r, shipped[r["image"]]) for r in rows if r["image"] in images]
            summary.records_missing_image += len(rows) - len(ok)
            for r in ok:
                r["split"] = plan.split(r["doc_url"])
                r["image_url"] = shareable_url(r.get("image_url"))
                exported_images.add(r["image"])
                for c in CARD_LINEAGE:
                    if r.get(c):
                        lineage[c].add(r[c])
            for w in active.values():
                w.write(ok, images)
    summary.images, summary.missing_images = len(exported_images), len(missing_images)
    for name, w in active.items():
        w.close()
        summary.counts[name] = _nested(w.counts)
    about = {"pretty_name": pretty_name, "default_mix": default_mix, "release_name": release_name, "version": version}
    if "llava" in active:
        write_text_atomic(out / "llava" / "README.md", llava_readme(summary.counts["llava"], **about))
    if "idefics" in active:
        write_text_atomic(out / "idefics" / "README.md", idefics_readme(
            summary.counts["idefics"], split_bytes=_split_bytes(out / "idefics"), **about))
    if "hf" in active:
        captioners = [c for c in map(lambda label: captioner_lineage(root, label), sorted(lineage["caption_model"]))
                      if c is not None]
        card = render_card(summary.counts["hf"], {c: sorted(v) for c, v in lineage.items()}, leakage,
                           captioners=captioners, formats=list(active), split_moves=plan.metadata(), **about,
                           split_bytes=_split_bytes(out / "hf" / "data"),
                           notes=card_notes, banner=card_banner)  # the ablation's section and verdict, if any
        write_text_atomic(out / "hf" / "README.md", card)
    for name in active:
        sizes = file_sizes(out / name)
        summary.files[name] = [f"{name}/{rel}" for rel in sizes]
        summary.bytes[name] = sum(sizes.values())
    return summary


def _split_bytes(folder: UPath) -> dict[tuple[str, str], int]:
    """(mix, split) → bytes of the `<mix>/<split>-*.parquet` files below `folder`."""
    sizes: Counter = Counter()
    for rel, n in file_sizes(folder).items():
        mix, _, name = rel.rpartition("/")
        if name.endswith(".parquet") and "/" not in mix:
            sizes[(mix, name.split("-", 1)[0])] += n
    return dict(sizes)


def captioner_lineage(root: UPath, label: str) -> CaptionerLineage | None:
    """What the card says about a trained captioner named by `label` (`contextual-captioner/<recipe>@<sha12>`):
    its base model and teacher from its checkpoint's training.json, and its evaluation when the recorded gate is
    for that checkpoint. None for any other model."""
    match = CAPTIONER_LABEL.fullmatch(label)
    if match is None:
        return None
    recipe, sha12 = match.groups()
    training = root / checkpoint_dir(recipe, sha12) / "training.json"
    info = json.loads(training.read_text()) if training.exists() else {}
    gate = read_gate(root, recipe)
    evaluated = gate is not None and gate.checkpoint_sha.startswith(sha12)
    scores = root / EVALUATION_ASSET / recipe / "scores.md"
    return CaptionerLineage(
        label=label, recipe=recipe, base_model=info.get("base_model"), teacher=info.get("teacher"),
        train_pairs=(info.get("counts") or {}).get("train"),
        gate_passed=gate.passed if evaluated else None,
        metrics_markdown=scores.read_text().strip() if evaluated and scores.exists() else None)


def parse_hf_target(target: str) -> tuple[str, str | None]:
    """`hf://datasets/org/name[@revision]` → (repo_id, revision)."""
    prefix = "hf://datasets/"
    if not target.startswith(prefix):
        raise ValueError(f"not an HF dataset URL: {target!r} (expected {prefix}org/name)")
    repo, _, revision = target[len(prefix):].strip("/").partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"expected {prefix}org/name, got {target!r}")
    return repo, revision or None


def push_dataset(folder: UPath, target: str, *, storage_options: dict[str, Any] | None = None,
                 token: str | None = None, private: bool = True, endpoint: str | None = None,
                 commit_message: str = "Upload VisCon export") -> dict[str, Any]:
    """Publish `folder` (normally `<out>/hf`: data shards + README.md) to `target`.

    * `hf://datasets/org/name[@revision]`: the HF Hub, as one commit through
      `HfApi.upload_folder(repo_type="dataset")`, creating the repo if needed; the token is `token` or
      `$HF_TOKEN`; `endpoint` overrides the Hub URL (default: huggingface.co or `$HF_ENDPOINT`,
      as huggingface_hub reads it). A folder on S3 is staged to a local temporary folder first (upload_folder reads
      local files).
    * any other fsspec URL (`file://…`, `s3://bucket/prefix` with `storage_options`): the files are
      copied below it at the same relative paths — the layout the Hub repo gets.
    """
    if target.startswith("hf://"):
        from huggingface_hub import HfApi

        repo_id, revision = parse_hf_target(target)
        api = HfApi(endpoint=endpoint, token=token or os.environ.get("HF_TOKEN"))
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            local = folder
            if folder.protocol not in ("", "file", "local"):
                local = UPath(tmp)
                copy_tree(folder, local)
            info = api.upload_folder(folder_path=str(Path(local.path)), repo_id=repo_id, repo_type="dataset",
                                     revision=revision, commit_message=commit_message)
        return {"target": target, "commit": getattr(info, "oid", None), "url": str(info)}
    files, nbytes = copy_tree(folder, UPath(target, **(storage_options or {})))
    return {"target": target, "files": files, "bytes": nbytes}


def push_release(release: UPath, version: str, target: str, **kwargs: Any) -> dict[str, Any]:
    """Publish the `hf/` folder of one release version to `target` (see `push_dataset`), and only a complete
    one: its manifest is read and every file it lists checked first (`IncompleteVersion` otherwise)."""
    folder = version_path(release, version)
    require_complete(folder)
    kwargs.setdefault("commit_message", f"Upload VisCon release {version}")
    return {**push_dataset(folder / "hf", target, **kwargs), "version": version}
