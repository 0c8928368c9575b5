"""Named training recipes for the contextual captioner; one partition of `contextual_captioner` each.

A recipe fixes everything that changes the trained weights: the base model, LoRA or a full fine-tune,
the optimiser schedule, batch shape, image handling, precision and seed. Recipes live in code (a static
partition set), so a change to a recipe is a code change with a review and a version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Text model only: a plain ["q_proj", "v_proj"] list also adapts the vision tower's attention.
TEXT_ONLY_TARGETS = r".*text_model.*\.(q|k|v|o|gate|up|down)_proj$"
TINY_STUDENT = "tiny-student"  # a tiny random-weight Idefics3 built offline (another seed than the teacher's)
TINY_STUDENT_SEED = 1


@dataclass(frozen=True)
class Recipe:
    name: str
    base_model: str  # a hub id / local folder, or TINY_STUDENT
    lora: bool = True  # False: full fine-tune
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = TEXT_ONLY_TARGETS  # a regex, or module names
    modules_to_save: tuple[str, ...] = ()  # trained in full beside the adapter (e.g. "lm_head")
    learning_rate: float = 1e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    do_image_splitting: bool = False
    longest_edge: int | None = None  # image resize; None keeps the base processor's
    bf16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0
    save_steps: int = 50
    warmup_steps: float = 0.0  # steps, or a fraction of all steps when < 1
    max_new_tokens: int = 64  # evaluation decoding budget

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        return cls(**{**d, "modules_to_save": tuple(d.get("modules_to_save", ()))})


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # The demo: a tiny random-weight student, a few optimiser steps, seconds on a CPU.
        # Its random lm_head keeps every logit near zero, and LoRA on the text model cannot scale logits
        # through the final norm, so the head is trained in full beside the adapter.
        Recipe(name="tiny-demo", base_model=TINY_STUDENT, lora_r=8, lora_alpha=16, lora_dropout=0.0,
               modules_to_save=("lm_head",),
               learning_rate=1e-2, num_train_epochs=1, per_device_train_batch_size=4,
               gradient_accumulation_steps=1, save_steps=4, max_new_tokens=32),
        # A real run: SmolVLM-256M on one GPU, LoRA on the text model, 512-px images without splitting.
        Recipe(name="smolvlm-256m", base_model="HuggingFaceTB/SmolVLM-256M-Instruct", lora_r=16, lora_alpha=32,
               learning_rate=1e-4, num_train_epochs=2, per_device_train_batch_size=8,
               gradient_accumulation_steps=4, do_image_splitting=False, longest_edge=512, bf16=True,
               gradient_checkpointing=True, save_steps=100, warmup_steps=0.03, max_new_tokens=96),
    )
}


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown captioner recipe {name!r}; known: {sorted(RECIPES)}") from None
