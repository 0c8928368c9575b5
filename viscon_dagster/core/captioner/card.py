"""The model card (README.md) of a trained captioner's model directory."""

from __future__ import annotations

import json

LICENCE_NOTE = ("Weights: the base model's licence (SmolVLM and the tiny demo student: Apache-2.0). Training "
                "captions come from the teacher model named below on OBELICS pages (CC-BY-4.0); the teacher's "
                "terms of use apply to what was learned from its outputs.")


def model_card(label: str, recipe: dict, base_model: str, teacher: str, counts: dict,
               training: dict | None = None, metrics_markdown: str | None = None) -> str:
    front = "\n".join(["---", "license: apache-2.0", f"base_model: {json.dumps(base_model)}",
                       "pipeline_tag: image-text-to-text", "library_name: transformers",
                       "tags: [contextual-captioning, idefics3, trl, peft]", "---"])
    lines = [front, f"# {label}", "",
             "A contextual captioner: given an image and the text of the web page it appears on, it writes one "
             "caption joining what is visible with what the page says. Fine-tuned with TRL's `SFTTrainer` on "
             "(image, page context) → teacher caption pairs; only the caption tokens carried loss.", "",
             f"- base model: `{base_model}`", f"- teacher: `{teacher}`",
             f"- training pairs: {counts.get('train', 0)} (held out: {counts.get('test', 0)}, split by page-URL hash,"
             " the release's test split)",
             f"- recipe `{recipe['name']}`: " + ", ".join(f"{k}={v}" for k, v in recipe.items() if k != "name"), ""]
    if training:
        lines += [f"Training: {training.get('steps')} optimiser steps, final mean loss {training.get('train_loss')}, "
                  f"{training.get('train_samples_per_s')} samples/s.", ""]
    lines += ["## Evaluation", "", metrics_markdown or "Not evaluated yet (the `captioner_evaluation` asset).", "",
              "## Files", "",
              "Merged weights (`model.safetensors`), the LoRA adapter (`adapter/`), processor, tokenizer and chat "
              "template. Loads with `AutoModelForImageTextToText.from_pretrained(<dir>)` and `vllm serve <dir>`.", "",
              "## Licence", "", LICENCE_NOTE, ""]
    return "\n".join(lines)


def loss_sparkline(history: list[dict]) -> str:
    """The training loss as one line of block characters, scaled from its lowest to its highest value."""
    lo, hi = min(p["loss"] for p in history), max(p["loss"] for p in history)
    bars = "▁▂▃▄▅▆▇█"
    return "".join(bars[int((p["loss"] - lo) / (hi - lo + 1e-12) * (len(bars) - 1))] for p in history)
