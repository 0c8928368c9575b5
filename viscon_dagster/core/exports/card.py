"""The dataset card (`hf/README.md`): YAML front matter the Hub and `datasets` read (licence, one
config per mix with its split files), then counts, models, prompt versions, leakage, licence and sources."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from viscon_dagster.core.exports.usage import (
    config_entries,
    counts_table,
    dataset_infos,
    empty_splits_note,
    mix_lines,
    release_description,
    training_markdown,
)

VISCON_BIBTEX = """@inproceedings{kumar2025viscon,
  title     = {VisCon-100K: Leveraging Contextual Web Data for Fine-tuning Vision Language Models},
  author    = {Kumar, Gokul Karthik and Chaabane, Iheb and Wu, Kebin},
  booktitle = {Pacific-Asia Conference on Knowledge Discovery and Data Mining (PAKDD)},
  year      = {2025},
  eprint    = {2502.10250},
  archivePrefix = {arXiv}
}"""
OBELICS_BIBTEX = """@inproceedings{laurencon2023obelics,
  title     = {OBELICS: An Open Web-Scale Filtered Dataset of Interleaved Image-Text Documents},
  author    = {Lauren{\\c{c}}on, Hugo and Saulnier, Lucile and Tronchon, L{\\'e}o and Bekman, Stas and
               Singh, Amanpreet and Lozhkov, Anton and Wang, Thomas and Karamcheti, Siddharth and
               Rush, Alexander M. and Kiela, Douwe and Cord, Matthieu and Sanh, Victor},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS), Datasets and Benchmarks},
  year      = {2023},
  eprint    = {2306.16527},
  archivePrefix = {arXiv}
}"""


LOCAL_URL_PREFIX = "local:"


@dataclass(frozen=True)
class CaptionerLineage:
    """A trained captioner that wrote captions of the release (VisCon-1M): for its card section."""
    label: str  # contextual-captioner/<recipe>@<sha12>
    recipe: str
    base_model: str | None
    teacher: str | None  # the caption model whose captions it was trained on
    train_pairs: int | None
    gate_passed: bool | None  # None: no evaluation recorded for this checkpoint
    metrics_markdown: str | None  # the evaluation's table (BLEU, ROUGE-L, tuned vs base)


def captioner_markdown(captioners: list[CaptionerLineage]) -> str:
    if not captioners:
        return ""
    parts = ["## Captioner", "",
             "The captions were written by a trained contextual captioner, not by the teacher model: a student "
             "VLM fine-tuned on the teacher's contextual captions (the VisCon-100K chain), evaluated on held-out "
             "pages against its untuned base.", ""]
    for c in captioners:
        gate = {True: "passed", False: "failed", None: "not recorded"}[c.gate_passed]
        parts += [f"### `{c.label}`", "",
                  f"- recipe: `{c.recipe}`", f"- base model: `{c.base_model or 'unknown'}`",
                  f"- teacher (whose captions it learned from): `{c.teacher or 'unknown'}`",
                  f"- training pairs: {c.train_pairs if c.train_pairs is not None else 'unknown'}",
                  f"- evaluation gate: {gate}", "",
                  c.metrics_markdown or "No evaluation recorded for this checkpoint.", ""]
    return "\n".join(parts) + "\n"


def shareable_url(url: str | None) -> str | None:
    """A source URL fit for a release: web, S3 and hub URLs as they are; a local file (`file://`, a bare path)
    only by its file name, `local:<name>`, since its path belongs to the machine that read it."""
    if not url or "://" in url and not url.startswith("file://"):
        return url
    return LOCAL_URL_PREFIX + url.rstrip("/").rsplit("/", 1)[-1]


def leakage_by_kind(samples: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean/median leakage of the Q&A (stage-7 samples' `free_form` / `mcq` items), per kind and overall."""
    scores: dict[str, list[float]] = {"free_form": [], "mcq": []}
    for s in samples:
        for kind in scores:
            scores[kind] += [float(q["leakage"]) for q in s.get(kind) or [] if q.get("leakage") is not None]
    scores["all"] = scores["free_form"] + scores["mcq"]
    return {k: ({"count": len(v), "mean": round(statistics.fmean(v), 4), "median": round(statistics.median(v), 4)}
                if v else {"count": 0}) for k, v in scores.items()}


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "10M<n<100M"


def front_matter(counts: dict[str, dict[str, int]], default_mix: str, pretty_name: str,
                 split_bytes: dict[tuple[str, str], int] | None = None,
                 description: str | None = None) -> dict[str, Any]:
    """Every config the release has, each with its splits and their rows (usage.config_entries, dataset_infos)."""
    configs = config_entries(counts, default_mix, "data/")
    total = max((sum(c.values()) for c in counts.values()), default=0)
    return {"license": "cc-by-4.0", "language": ["en"], "pretty_name": pretty_name,
            "task_categories": ["image-text-to-text", "visual-question-answering"],
            "tags": ["multimodal", "vision-language", "synthetic", "obelics", "viscon"],
            "size_categories": [_size_category(total)], "configs": configs,
            "dataset_info": dataset_infos(counts, split_bytes or {}, description or pretty_name)}


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def _values(vals: list[str], limit: int = 6) -> str:
    if not vals:
        return "—"
    if len(vals) > limit:  # e.g. 45 shards: a count and the range, not a wall of names
        return f"{len(vals)} values, `{vals[0]}` … `{vals[-1]}`"
    return ", ".join(f"`{v}`" for v in vals)


def _leakage_table(leakage: dict[str, Any] | None) -> str:
    """Accepts {kind: summary} (see `leakage_by_kind`) or one flat summary (`core.chain.leakage.leakage_summary`)."""
    if not leakage:
        return "Not computed for this export."
    per_kind = leakage if all(isinstance(v, dict) for v in leakage.values()) else {"all": leakage}
    columns = list(dict.fromkeys(["count", "mean", "median", *[k for v in per_kind.values() for k in v]]))
    return _table(["Q&A", *columns], [[kind, *[v.get(c, "—") for c in columns]] for kind, v in per_kind.items()])


def render_card(counts: dict[str, dict[str, int]], lineage: dict[str, list[str]],
                leakage: dict[str, Any] | None = None, *, pretty_name: str = "VisCon (reproduction)",
                default_mix: str = "leaky", notes: str = "", captioners: list[CaptionerLineage] | None = None,
                version: str | None = None, formats: list[str] | None = None, release_name: str | None = None,
                split_moves: dict[str, int] | None = None, banner: str = "",
                split_bytes: dict[tuple[str, str], int] | None = None) -> str:
    """counts: mix → split → records (the configs the release has); lineage: column → distinct values (models,
    prompt versions); version: the release version id; formats: the release's folders (for how to train on them);
    split_moves: pages moved to a split so that every config holds both (core/exports/split.py); split_bytes:
    (config, split) → bytes of its parquet files (the front matter's dataset_info); banner: a notice
    under the title (the ablation's "not recommended"); notes: sections before the citation (the ablation's)."""
    if default_mix not in counts and counts:
        default_mix = sorted(counts)[0]
    front = front_matter(counts, default_mix, pretty_name, split_bytes,
                         release_description(pretty_name, release_name, version))
    yaml_text = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
    training = training_markdown(sorted(counts), formats or ["hf"], default_mix=default_mix,
                                 release_name=release_name, version=version)
    model_rows = [[k, _values(vals)] for k, vals in lineage.items()]
    moved = {s.removeprefix("pages_moved_to_"): n for s, n in (split_moves or {}).items() if n}
    split_note = (" So that every config holds both splits, " + " and ".join(
        f"{n} page{'s' if n > 1 else ''} nearest the threshold moved to {s}" for s, n in moved.items())
        + " (each with all its records, in every config)." if moved else "")
    leak_text = _leakage_table(leakage)
    version_line = f"\nRelease version `{version}`.\n" if version else ""
    return f"""---
{yaml_text}---

# {pretty_name}
{version_line}{banner}
Image conversations built from web pages the way VisCon-100K (arXiv 2502.10250) was: a vision-language
model captions each image *with the text of the page around it* (an image-contextual caption), a
language model turns each caption into free-form and multiple-choice Q&A, near-duplicate questions are
removed, and the results become LLaVA-style conversations in several *mixes* — one config per mix.

## Configs and splits

{empty_splits_note(counts)}

{counts_table(counts, default_mix)}

The split is a seeded hash of the page URL: every image of one page is in the same split.{split_note}

Configs (mixes) in this release:
{mix_lines(sorted(counts), default_mix)}

Columns: `id`, `mix`, `content` (what the turns hold), `image` (embedded JPEG), `conversations`
(`[{{"from": "human"|"gpt", "value"}}]`, `<image>` once in the first human turn; MCQ options as `A. …`
lines, answered with the letter), and lineage: `shard`, `doc_id`, `doc_url`, `image_url` (`local:<file name>`
where the source was a local file), `source_sha256`, `shipped_sha256`, `caption_model`, `qa_model`,
`caption_prompt_version`, `qa_prompt_version`. Models are named by label (a hub id, `<folder>@<digest>` for a local
checkpoint, `contextual-captioner/<recipe>@<sha12>` for a trained captioner), never by a path.

Two hashes, two files: `source_sha256` is the SHA-256 of the bytes fetched from `image_url` (the image's identity
through the pipeline, and the name of its file: `images/ab/<source_sha256>.jpg`); `shipped_sha256` is the SHA-256
of the JPEG this release ships — the bytes embedded in `image` and the file under `llava/images/` — re-encoded
from the source, so the two differ. Check integrity or deduplicate shipped files by `shipped_sha256`.

{training}
## Models and prompt versions

{_table(["field", "values"], model_rows)}

{captioner_markdown(captioners or [])}## Leakage

Share of each answer's content words already in the caption (1.0: answerable from the caption alone).

{leak_text}

## Licence

Released under CC-BY-4.0, as OBELICS is. Images and page URLs come from Common Crawl via OBELICS
(opt-out-respecting config); the images remain their owners' and are included for research use, with
their source URL in `image_url`. Captions and Q&A were generated by the models named above; their use
is also subject to those models' terms.

## Sources

- OBELICS (HuggingFaceM4/OBELICS): interleaved image-text web documents from Common Crawl.
- VisCon-100K: Kumar, Chaabane and Wu, "VisCon-100K: Leveraging Contextual Web Data for Fine-tuning
  Vision Language Models", PAKDD 2025, arXiv 2502.10250. This dataset reproduces its pipeline; it is
  not the authors' release.
{notes}
## Citation

```bibtex
{VISCON_BIBTEX}

{OBELICS_BIBTEX}
```
"""
