"""A release version folder read the way its users read it, with clients this project did not write: `datasets`
by config and split (through the cards' YAML), TRL's VLM collator with an Idefics3 processor, LLaVA's data format
with the image folder its README names, and the shipped files' hashes recomputed. Each function returns what it
found (counts, errors), so the tests say what they expected."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tests.exports.llava_validator import validate_llava_file
from viscon_dagster.core.exports.split import SPLITS


def front_matter(readme: Path) -> dict:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{readme.name} has no YAML front matter"
    return yaml.safe_load(text.split("---\n", 2)[1])


def declared_configs(readme: Path) -> dict[str, list[str]]:
    """config → the splits its card declares, in order."""
    return {c["config_name"]: [f["split"] for f in c["data_files"]] for c in front_matter(readme)["configs"]}


def counts_in_table(readme: Path) -> dict[str, dict[str, int]]:
    """The `| config | train | test | total |` table of a card or README: config → split → rows."""
    counts = {}
    for line in readme.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\| `([a-z_]+)`(?: \(default\))? \| (\d+) \| (\d+) \| (\d+) \|", line)
        if m:
            train, test, total = map(int, m.groups()[1:])
            assert train + test == total, line
            counts[m.group(1)] = {"train": train, "test": test}
    return counts


def load_every_config(folder: Path, cache: Path) -> dict[str, dict[str, int]]:
    """`load_dataset(folder, config, split=split)` for every config and split the folder's README declares."""
    from datasets import load_dataset

    found = {}
    for config, splits in declared_configs(folder / "README.md").items():
        found[config] = {s: load_dataset(str(folder), config, split=s, cache_dir=str(cache)).num_rows for s in splits}
    return found


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shipped_hashes(version: Path) -> tuple[int, list[str]]:
    """(images checked, mismatches): every image of every format hashed again against its `shipped_sha256`, and
    every `source_sha256` against the file name the pipeline gave it."""
    checked, bad = 0, []

    def check(where: str, data: bytes, row: dict, path: str) -> None:
        nonlocal checked
        checked += 1
        if sha256(data) != row["shipped_sha256"]:
            bad.append(f"{where}: shipped_sha256 {row['shipped_sha256']} is not the hash of the image shipped")
        if Path(path).stem != row["source_sha256"] or "image_sha256" in row:
            bad.append(f"{where}: source_sha256 {row['source_sha256']} does not name {path}")

    for f in sorted((version / "hf" / "data").rglob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            check(f"hf {r['id']}", r["image"]["bytes"], r, r["image"]["path"])
    for f in sorted((version / "idefics").rglob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            for image in r["images"]:
                check(f"idefics {r['id']}", image["bytes"], r, image["path"])
    folder = llava_image_folder(version)
    for f in sorted((version / "llava").glob("*/*.json")):
        for r in json.loads(f.read_text(encoding="utf-8")):
            check(f"llava {r['id']}", (folder / r["image"]).read_bytes(), r, r["image"])
    return checked, bad


def llava_image_folder(version: Path) -> Path:
    """The folder `llava/README.md` tells LLaVA's trainer to use as `--image_folder` ($D: the version folder)."""
    readme = (version / "llava" / "README.md").read_text(encoding="utf-8")
    (folder,) = set(re.findall(r"--image_folder \$D/(\S+)", readme))
    return version / folder


def llava_records(version: Path) -> tuple[dict[str, dict[str, int]], list[str]]:
    """(config → split → records, errors): every JSON file of the LLaVA folder through LLaVA's documented format,
    each image resolved against the folder the README names."""
    folder, counts, errors = llava_image_folder(version), {}, []
    for config in sorted(p.name for p in (version / "llava").iterdir() if p.is_dir() and p.name != "images"):
        for split in SPLITS:
            path = version / "llava" / config / f"{split}.json"
            if not path.exists():
                errors.append(f"{config}/{split}.json is missing")
                continue
            errors += [f"{config}/{split}: {e}" for e in validate_llava_file(path, folder)]
            counts.setdefault(config, {})[split] = len(json.loads(path.read_text(encoding="utf-8")))
    return counts, errors


def collate_every_config(version: Path, processor, cache: Path, batch: int = 4) -> dict[str, int]:
    """config → rows collated: a batch of each split of each config through TRL's
    `DataCollatorForVisionLanguageModeling`; each row's image tokens must match its images."""
    from datasets import load_dataset
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = DataCollatorForVisionLanguageModeling(processor)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    per_image = processor.image_seq_len
    done = {}
    for config in declared_configs(version / "idefics" / "README.md"):
        ds = load_dataset(str(version / "idefics"), config, cache_dir=str(cache))
        rows = 0
        for split in ds:  # the declared splits (a config on a single page has one)
            examples = [ds[split][i] for i in range(min(batch, ds[split].num_rows))]
            images = [len(e["images"]) for e in examples]
            out = collator(examples)
            tokens = (out["input_ids"] == image_id).sum(dim=1).tolist()
            assert tokens == [per_image * n for n in images], (config, split, tokens, images)
            assert out["pixel_values"].shape[:2] == (len(examples), max(images)), (config, out["pixel_values"].shape)
            assert out["labels"].shape == out["input_ids"].shape
            rows += len(examples)
        done[config] = rows
    return done

