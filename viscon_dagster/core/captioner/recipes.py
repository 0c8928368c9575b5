"""Named training recipes for the contextual captioner; one partition of `contextual_captioner` each.

A recipe fixes everything that changes the trained weights: the base model, LoRA or a full fine-tune,
the optimiser schedule, batch shape, image handling, precision and seed. Recipes live in code (a static
partition set), so a change to a recipe is a code change with a review and a version.

A recipe names its task: `captioning` (the captioner: prompt/completion rows, loss on the caption) or
`conversation` (SFT on LLaVA/Idefics conversation records, loss on every assistant turn: the ablation's target
models, `ABLATION_RECIPES`, one of which `mix_finetune` trains on each mix).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

# Text model only: a plain ["q_proj", "v_proj"] list also adapts the vision tower's attention.
TEXT_ONLY_TARGETS = r".*text_model.*\.(q|k|v|o|gate|up|down)_proj$"
TINY_STUDENT = "tiny-student"  # a tiny random-weight Idefics3 built offline (another seed than the teacher's)
TINY_STUDENT_SEED = 1
CAPTIONING, CONVERSATION = "captioning", "conversation"
TASKS = (CAPTIONING, CONVERSATION)


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
    task: str = CAPTIONING  # CAPTIONING or CONVERSATION
    # conversation SFT masks everything but the assistant turns through the chat template's {% generation %}
    # markers; a base whose template has none, and that TRL cannot patch, names one of training/chat_templates.py
    training_chat_template: str | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"recipe {self.name!r}: unknown task {self.task!r} (known: {TASKS})")

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def as_dict(self) -> dict:
        """Every field; the fields added with the task are left out at their defaults, so a captioning recipe's
        dict, fingerprint and training key are what they were before tasks existed."""
        d = asdict(self)
        for name, default in _ADDED_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        return d

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


_ADDED_DEFAULTS = {"task": CAPTIONING, "training_chat_template": None}


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown captioner recipe {name!r}; known: {sorted(RECIPES)}") from None


# Target models of the ablation (`mix_finetune`): every mix is trained with the same recipe and seed. Not
# captioner partitions: the captioner's partition set is RECIPES.
ABLATION_RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # The demo and the tests: the tiny random-weight Idefics3, fully fine-tuned (LoRA cannot move its random
        # head far enough in a few dozen steps), 8 conversations a step. Seconds a step on a CPU.
        Recipe(name="tiny-ablation", base_model=TINY_STUDENT, task=CONVERSATION, training_chat_template="chatml",
               lora=False, learning_rate=3e-3, max_steps=40, per_device_train_batch_size=8,
               gradient_accumulation_steps=1, save_steps=10, max_new_tokens=8),
        # A 7B-class target as in the paper (IDEFICS2-8b; docs/ablation.md): LoRA on the text model, 980-px images
        # without splitting (64 visual tokens each after the perceiver), bf16, effective batch 64 (8 × 8 on one
        # GPU; with N GPUs set gradient_accumulation_steps to 8/N to keep it). 1,500 steps ≈ 96K conversations,
        # about one pass over the leaky mix of VisCon-100K; every mix gets the same steps.
        Recipe(name="idefics2-8b", base_model="HuggingFaceM4/idefics2-8b", task=CONVERSATION,
               training_chat_template="idefics2", lora=True, lora_r=64, lora_alpha=128, lora_dropout=0.05,
               learning_rate=1e-4, max_steps=1500, per_device_train_batch_size=8, gradient_accumulation_steps=8,
               do_image_splitting=False, longest_edge=980, bf16=True, gradient_checkpointing=True, save_steps=100,
               warmup_steps=0.03, max_new_tokens=8),
    )
}


def ablation_recipe(name: str) -> Recipe:
    try:
        return ABLATION_RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown ablation recipe {name!r}; known: {sorted(ABLATION_RECIPES)}") from None
