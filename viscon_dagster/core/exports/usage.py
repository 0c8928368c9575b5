"""How a release is used: the README of each format folder (`llava/`, `idefics/`) and the card's section on
training, with the exact invocation for each trainer, written for the configs (mixes) the release holds.

Where the images are is the first thing a trainer needs: LLaVA records name `images/ab/<sha256>.jpg`, relative to
the `llava/` folder itself (its `--image_folder`); the parquet formats embed the images. The multi-turn mixes need a
conversation template with turns (LLaVA's `v1`, or a chat template); only the single-turn caption mixes fit LLaVA's
pretraining template `plain`, which keeps the image and the answer and drops the instruction.
"""

from __future__ import annotations

from typing import Any

import yaml

from viscon_dagster.core.exports.split import SPLITS

# what each mix holds (conversations.py); the card and the READMEs describe only the mixes a release has
MIX_DOCS = {
    "leaky": "the caption turn followed by the image's Q&A in one conversation (the paper's best mix)",
    "captions": "the contextual caption alone, one turn",
    "free_form": "free-form Q&A only",
    "mcq": "multiple-choice Q&A only (options as `A. …` lines, answered with the letter)",
    "qa": "free-form and multiple-choice Q&A",
    "separate": "the caption and the Q&A as two records (non-leaky)",
    "noncontextual": "the control: a caption written without the page, one turn",
}
SINGLE_TURN = ("captions", "noncontextual")  # one (instruction, caption) pair per record: fits `plain`
NONCONTEXTUAL_REQUEST = (
    "The non-contextual control (`noncontextual`: the same images captioned without the page, to measure what the "
    "context adds) is made on request: materialize `noncontextual_captions` for the shards, then `conversations` "
    "and the release.")
TRL_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"


def mix_lines(mixes: list[str], default_mix: str | None = None) -> str:
    """A line per mix the release holds, and how to get the control when it does not hold it."""
    lines = [f"- `{m}` — {MIX_DOCS.get(m, 'see the conversations')}"
             for m in sorted(mixes, key=lambda m: (m != default_mix, m))]
    if "noncontextual" not in mixes:
        lines.append(f"\n{NONCONTEXTUAL_REQUEST}")
    return "\n".join(lines)


def counts_table(counts: dict[str, dict[str, int]], default_mix: str | None = None) -> str:
    """| config | train | test | total | — every split, zeros included."""
    rows = ["| config (mix) | " + " | ".join(SPLITS) + " | total |", "|---|" + "---|" * (len(SPLITS) + 1)]
    for mix in sorted(counts, key=lambda m: (m != default_mix, m)):
        n = [counts[mix].get(s, 0) for s in SPLITS]
        label = f"`{mix}`" + (" (default)" if mix == default_mix else "")
        rows.append(f"| {label} | " + " | ".join(map(str, n)) + f" | {sum(n)} |")
    return "\n".join(rows)


def config_entries(counts: dict[str, dict[str, int]], default_mix: str, prefix: str) -> list[dict[str, Any]]:
    """The `configs` of a card's front matter: every mix with its splits. A split without records keeps its (empty)
    file but is not declared: `datasets` cannot load an empty split, and one would make the whole config fail."""
    configs = []
    for mix in sorted(counts, key=lambda m: (m != default_mix, m)):
        cfg: dict[str, Any] = {"config_name": mix}
        if mix == default_mix:
            cfg["default"] = True
        cfg["data_files"] = [{"split": s, "path": f"{prefix}{mix}/{s}-*.parquet"} for s in SPLITS
                             if counts[mix].get(s)]
        configs.append(cfg)
    return configs


def dataset_infos(counts: dict[str, dict[str, int]], split_bytes: dict[tuple[str, str], int],
                  description: str) -> list[dict[str, Any]]:
    """The front matter's `dataset_info`: each config's declared splits with their rows (and the bytes of their
    files). `datasets` checks the rows it reads against them, and hashes them — with `description`, which names the
    release and its version — into its cache key: without it two release folders (every one is named `hf/`, its
    configs alike) share one cache entry, and loading a new version or the other release returns the old rows."""
    return [{"config_name": mix, "description": f"{description}: {mix}",
             "splits": [{"name": s, "num_bytes": split_bytes.get((mix, s), 0), "num_examples": n[s]}
                        for s in SPLITS if n.get(s)]} for mix, n in sorted(counts.items())]


def empty_splits_note(counts: dict[str, dict[str, int]]) -> str:
    """Where a config has no record in a split (it sits on a single page, or one split was asked for)."""
    empty = [f"`{m}` {s}" for m in sorted(counts) for s in SPLITS if not counts[m].get(s)]
    if not empty:
        return "Every config has both splits, in every format."
    return (f"Every config has both split files in every format, but {', '.join(empty)} has no record (a config on a "
            "single page, or a release made with one split): its file is empty and it is not declared, since "
            "`datasets` cannot load an empty split.")


def _folder_lines(release_name: str | None, version: str | None) -> str:
    """Shell lines that set D to the version folder."""
    name = release_name or "<release>"
    if version is None:
        return "D=<the release version folder, holding llava/, idefics/ and hf/>"
    return (f"R=.viscon/storage/{name}   # the release folder (it holds CURRENT) under your storage root\n"
            f"D=$R/versions/{version}   # this version; $R/versions/$(cat $R/CURRENT) is the current one")


def _example_mix(mixes: list[str], default_mix: str) -> str:
    return default_mix if default_mix in mixes else (mixes[0] if mixes else default_mix)


def llava_section(mixes: list[str], default_mix: str, release_name: str | None, version: str | None) -> str:
    mix = _example_mix(mixes, default_mix)
    multi = [m for m in mixes if m not in SINGLE_TURN]
    single = [m for m in mixes if m in SINGLE_TURN]
    template = (f"- `--version v1` (or the conversation template of your base model) for the multi-turn mixes "
                f"{', '.join(f'`{m}`' for m in multi)}: their records hold several turns." if multi else "")
    if single:
        template += (f"\n- `--version plain` (LLaVA's pretraining template: image and answer, no instruction) "
                     f"fits only {' and '.join(f'`{m}`' for m in single)}, one caption turn per record; `v1` works for "
                     f"{'them' if len(single) > 1 else 'it'} too.")
    return f"""The `image` of every record is relative to the `llava/` folder itself
(`images/ab/<source_sha256>.jpg`): give LLaVA's trainer `$D/llava` as `--image_folder` — not `$D/llava/images`.
One JSON file per config and split: `--data_path $D/llava/<config>/train.json`; `test.json` is for evaluation
(LLaVA's trainer takes no evaluation file).

```bash
{_folder_lines(release_name, version)}
# in a clone of github.com/haotian-liu/LLaVA; the other flags as in its scripts/v1_5/finetune.sh
deepspeed llava/train/train_mem.py --deepspeed ./scripts/zero3.json \\
    --model_name_or_path lmsys/vicuna-7b-v1.5 --version v1 \\
    --data_path $D/llava/{mix}/train.json \\
    --image_folder $D/llava \\
    --vision_tower openai/clip-vit-large-patch14-336 --pretrain_mm_mlp_adapter <your mm_projector.bin> \\
    --mm_projector_type mlp2x_gelu --mm_vision_select_layer -2 --mm_use_im_start_end False \\
    --mm_use_im_patch_token False --image_aspect_ratio pad --bf16 True --output_dir ./checkpoints/llava-viscon
```

Template (`--version`):
{template}

On S3, copy the folder down first (LLaVA reads local files):
`aws s3 sync s3://<bucket>/<prefix>/{release_name or '<release>'}/versions/{version or '<version>'}/llava ./llava`."""


def trl_section(mixes: list[str], default_mix: str, release_name: str | None, version: str | None) -> str:
    mix = _example_mix(mixes, default_mix)
    name = release_name or "<release>"
    folder = f".viscon/storage/{name}/versions/{version}" if version else "<the release version folder>"
    return f"""The `idefics/` folder holds `images` (the embedded JPEGs) and `messages` (`[{{"role": "user"|"assistant",
"content": [{{"type": "image"}} | {{"type": "text", "text"}}]}}]`), the shape TRL's `SFTTrainer` and its
`DataCollatorForVisionLanguageModeling` take with an Idefics3 / SmolVLM processor. `idefics/README.md` declares
every config and its splits, so `load_dataset` reads the folder by config name:

```python
from datasets import load_dataset
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import SFTConfig, SFTTrainer

D = "{folder}"  # from current_release_path(root, "{name}")
ds = load_dataset(f"{{D}}/idefics", "{mix}")  # DatasetDict: train, test
processor = AutoProcessor.from_pretrained("{TRL_MODEL}")  # any Idefics3 / SmolVLM checkpoint
model = AutoModelForImageTextToText.from_pretrained("{TRL_MODEL}")
trainer = SFTTrainer(model=model, processing_class=processor, train_dataset=ds["train"],
                     args=SFTConfig(output_dir="smolvlm-viscon", max_length=None))  # never cut image tokens
trainer.train()
```"""


def datasets_section(mixes: list[str], default_mix: str, release_name: str | None, version: str | None) -> str:
    mix = _example_mix(mixes, default_mix)
    name = release_name or "<release>"
    folder = f".viscon/storage/{name}/versions/{version}" if version else "<the release version folder>"
    return f"""```python
from datasets import load_dataset
ds = load_dataset("{folder}/hf", "{mix}")  # or this dataset's Hub id; DatasetDict: train, test
ds["train"][0]["image"]                  # a PIL image; "conversations" holds the LLaVA turns
```
In Python, `current_release_path(root, "{name}")` (`viscon_dagster.core.exports.versions`) gives the current
version's folder for a local or S3 storage root."""


def release_description(pretty_name: str, release_name: str | None, version: str | None) -> str:
    parts = (pretty_name, release_name and f"({release_name})", version and f"version {version}")
    return " ".join(x for x in parts if x)


def _front_matter(counts: dict[str, dict[str, int]], default_mix: str, pretty_name: str,
                  split_bytes: dict[tuple[str, str], int], description: str) -> str:
    front = {"pretty_name": f"{pretty_name} — Idefics chat format", "license": "cc-by-4.0",
             "configs": config_entries(counts, default_mix, ""),
             "dataset_info": dataset_infos(counts, split_bytes, f"{description}, Idefics chat format")}
    return yaml.safe_dump(front, sort_keys=False, allow_unicode=True)


def _default(counts: dict[str, dict[str, int]], default_mix: str) -> str:
    return default_mix if default_mix in counts or not counts else sorted(counts)[0]


def llava_readme(counts: dict[str, dict[str, int]], *, pretty_name: str, default_mix: str = "leaky",
                 release_name: str | None = None, version: str | None = None) -> str:
    mixes, default_mix = sorted(counts), _default(counts, default_mix)
    version_line = f"Release version `{version}`.\n\n" if version else ""
    return f"""# {pretty_name} — LLaVA format

{version_line}One JSON list per config (mix) and split, `<config>/train.json` and `<config>/test.json` (`[]`
where a split has no records), in LLaVA's format — `{{"id", "image", "conversations": [{{"from": "human"|"gpt",
"value"}}]}}`, `<image>` once, in the first human turn — with lineage keys LLaVA ignores (the columns of
`hf/README.md`), and the images they name under `images/`.

{counts_table(counts, default_mix)}

{mix_lines(mixes, default_mix)}

## Training with LLaVA

{llava_section(mixes, default_mix, release_name, version)}
"""


def idefics_readme(counts: dict[str, dict[str, int]], *, pretty_name: str, default_mix: str = "leaky",
                   release_name: str | None = None, version: str | None = None,
                   split_bytes: dict[tuple[str, str], int] | None = None) -> str:
    """`split_bytes`: (config, split) → bytes of its files."""
    mixes, default_mix = sorted(counts), _default(counts, default_mix)
    description = release_description(pretty_name, release_name, version)
    version_line = f"Release version `{version}`.\n\n" if version else ""
    return f"""---
{_front_matter(counts, default_mix, pretty_name, split_bytes or {}, description)}---

# {pretty_name} — Idefics chat format

{version_line}Parquet shards per config (mix) and split, `<config>/<split>-0000N-of-0000M.parquet`, with the
image embedded, chat messages and the lineage columns of `hf/README.md`. {empty_splits_note(counts)}

{counts_table(counts, default_mix)}

{mix_lines(mixes, default_mix)}

## Training with TRL (SFT, Idefics3 / SmolVLM)

{trl_section(mixes, default_mix, release_name, version)}
"""


def training_markdown(mixes: list[str], formats: list[str], *, default_mix: str = "leaky",
                      release_name: str | None = None, version: str | None = None) -> str:
    """The card's section: each format of the release with the exact invocation of its trainer."""
    parts = ["## Training with it", "",
             "Each format of the release lives in its own folder of the release version, beside `hf/`; "
             "`llava/README.md` and `idefics/README.md` repeat what follows.", "",
             "### 🤗 datasets (`hf/`)", "", datasets_section(mixes, default_mix, release_name, version), ""]
    if "idefics" in formats:
        parts += ["### TRL SFT with an Idefics3 / SmolVLM processor (`idefics/`)", "",
                  trl_section(mixes, default_mix, release_name, version), ""]
    if "llava" in formats:
        parts += ["### LLaVA (`llava/`)", "", llava_section(mixes, default_mix, release_name, version), ""]
    return "\n".join(parts) + "\n"
