"""Training throughput: the captioner's trainer (viscon_dagster/training/train_captioner.py) against TRL's own
VLM SFT example script (examples/scripts/sft_vlm.py of huggingface/trl), same recipe, same data, same run.

    python benchmarks/training/trainer_vs_trl.py --trl-script /path/to/trl/examples/scripts/sft_vlm.py

Both train the same tiny random-weight Idefics3 student (built offline) on the same prompt/completion parquet
(page-context prompts of about the demo's length), LoRA on the same modules, no checkpoints, for the same number
of optimiser steps; runs alternate (ours, TRL, ours, TRL, ...) and the medians are compared. Figures: samples/s
and tokens/s from each Trainer's own counters (`train_samples_per_second`, `num_tokens` / `train_runtime`),
peak RSS of the process (/usr/bin/time). Goal: ours / TRL >= 0.95 in samples/s.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from viscon_dagster.core.captioner.recipes import RECIPES  # noqa: E402
from viscon_dagster.core.captioner.training_data import write_training_file  # noqa: E402
from viscon_dagster.demo.tiny_models import build_tiny_vlm  # noqa: E402

# the same modules for both: TRL's example takes module names (no regex), so our recipe names them the same way
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = ("harbour market festival river bridge museum painting portrait mountain village castle garden "
         "station street photograph exhibition").split()


def write_data(path: Path, rows: int, prompt_words: int, seed: int = 0) -> None:
    from PIL import Image

    rng = random.Random(seed)
    pairs, images = [], []
    for _ in range(rows):
        b = io.BytesIO()
        Image.new("RGB", (160, 120), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(b, "JPEG")
        images.append(b.getvalue())
        page = " ".join(rng.choice(WORDS) for _ in range(prompt_words))
        pairs.append({"system": "You write image captions.", "prompt": f"--- page ---\n{page}\n--- end ---",
                      "caption": f"a photograph of the {rng.choice(WORDS)} by the {rng.choice(WORDS)} ."})
    write_training_file(pairs, images, path)


def timed(cmd: list[str], log: Path) -> tuple[str, float]:
    with log.open("w") as out:
        subprocess.run(["/usr/bin/time", "-f", "PEAK_RSS_KB %M", *cmd], stdout=out, stderr=subprocess.STDOUT,
                       check=True, cwd=REPO)
    text = log.read_text()
    return text, int(re.findall(r"PEAK_RSS_KB (\d+)", text)[-1]) / 1024


def trainer_metrics(text: str) -> dict:
    """The Trainer's own last log lines: train_runtime, train_samples_per_second and the token count."""
    dicts = [ast.literal_eval(m) for m in re.findall(r"^(\{'.*\})$", text, re.M)]
    final = next(d for d in reversed(dicts) if "train_runtime" in d)
    tokens = max(float(d["num_tokens"]) for d in dicts if "num_tokens" in d)
    runtime = float(final["train_runtime"])
    return {"samples_per_s": float(final["train_samples_per_second"]), "tokens_per_s": tokens / runtime,
            "runtime_s": runtime}


def trl_recipe_flags(r) -> list[str]:
    """The rest of the recipe, where TRL's defaults differ from Transformers' (SFTConfig turns gradient
    checkpointing and bf16 on unless told otherwise) and the modules trained beside the adapter."""
    flags = ["--gradient_checkpointing", str(r.gradient_checkpointing), "--bf16", str(r.bf16)]
    return flags + (["--lora_modules_to_save", *r.modules_to_save] if r.modules_to_save else [])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trl-script", required=True, help="huggingface/trl examples/scripts/sft_vlm.py")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--prompt-words", type=int, default=300)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    base = build_tiny_vlm(tmp / "student", seed=1)
    data = tmp / "data"
    write_data(data / "train.parquet", a.rows, a.prompt_words)
    recipe = replace(RECIPES["tiny-demo"], target_modules=MODULES, max_steps=a.steps, save_steps=10**6)
    r = recipe
    results: dict[str, list[dict]] = {"ours": [], "trl": []}
    for i in range(a.repeats):
        work = tmp / f"ours-{i}"
        spec = tmp / f"ours-{i}.json"
        spec.write_text(json.dumps({"recipe": r.as_dict(), "base_model": str(base),
                                    "train_file": str(data / "train.parquet"), "work_dir": str(work)}))
        text, rss = timed([sys.executable, "-m", "viscon_dagster.training.train_captioner", "--spec", str(spec)],
                          tmp / f"ours-{i}.log")
        results["ours"].append({**trainer_metrics(text), "peak_rss_mib": rss})
        text, rss = timed([sys.executable, a.trl_script, "--model_name_or_path", str(base), "--dataset_name",
                           str(data), "--output_dir", str(tmp / f"trl-{i}"), "--per_device_train_batch_size",
                           str(r.per_device_train_batch_size), "--gradient_accumulation_steps",
                           str(r.gradient_accumulation_steps), "--learning_rate", str(r.learning_rate),
                           "--max_steps", str(a.steps), "--seed", str(r.seed), "--logging_steps", "1",
                           "--save_strategy", "no", "--report_to", "none", "--use_cpu", "--dtype", "float32",
                           "--dataloader_num_workers", "0", "--use_peft", "--lora_r", str(r.lora_r),
                           "--lora_alpha", str(r.lora_alpha), "--lora_dropout", str(r.lora_dropout),
                           "--lora_target_modules", *MODULES, *trl_recipe_flags(r)], tmp / f"trl-{i}.log")
        results["trl"].append({**trainer_metrics(text), "peak_rss_mib": rss})
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in results.items()}
    print(json.dumps({"runs": results, "median": med,
                      "ratio_samples_per_s": med["ours"]["samples_per_s"] / med["trl"]["samples_per_s"],
                      "ratio_tokens_per_s": med["ours"]["tokens_per_s"] / med["trl"]["tokens_per_s"],
                      "rows": a.rows, "steps": a.steps, "batch": r.per_device_train_batch_size}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
