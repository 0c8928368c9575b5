"""Train the contextual captioner, or an ablation target on one mix: one process, launched through Dagster Pipes or
by hand. The recipe's task picks the rows and the loss: `captioning` (prompt/completion rows, loss on the caption)
or `conversation` (LLaVA/Idefics conversations as `messages` rows, loss on every assistant turn).

    python -m viscon_dagster.training.train_captioner --spec spec.json
    accelerate launch -m viscon_dagster.training.train_captioner --spec spec.json   # several GPUs

Under Dagster (`PipesSubprocessClient`, `PipesK8sClient`) the spec arrives as the Pipes extras and the
loss goes back to Dagster's logs line by line; the main process reports the materialization (data version:
the content hash of the merged weights). The spec:

    recipe        a Recipe as a dict (core/captioner/recipes.py)
    base_model    a checkpoint folder (or a hub id where the hub can be reached)
    train_file    the training rows (core/captioner/training_data.py; conversations: core/ablation/training_rows.py)
    work_dir      checkpoints go to <work_dir>/checkpoints, the finished model to <work_dir>/model

A killed run resumes from the last Trainer checkpoint in <work_dir>/checkpoints on the next start.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

from viscon_dagster.core.captioner.recipes import CONVERSATION, Recipe
from viscon_dagster.core.captioner.weights import weights_sha


class _Printer:
    """Stands in for the Pipes context when the script runs by hand."""

    class log:  # noqa: N801
        info = warning = staticmethod(lambda msg: print(msg, file=sys.stderr, flush=True))

    extras: dict = {}

    def report_asset_materialization(self, metadata=None, data_version=None):
        print(json.dumps({"materialization": metadata, "data_version": data_version}), flush=True)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def load_processor(base_model: str, recipe: Recipe):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(base_model)
    image_processor = processor.image_processor
    image_processor.do_image_splitting = recipe.do_image_splitting
    if recipe.longest_edge:
        image_processor.size = {"longest_edge": recipe.longest_edge}
        image_processor.max_image_size = {"longest_edge": recipe.longest_edge}
    return processor


def sft_config(recipe: Recipe, output_dir: str, use_cpu: bool, **overrides):
    from trl import SFTConfig

    kwargs = dict(
        output_dir=output_dir,
        max_length=None,  # never truncate: a cut would drop image tokens and break the image/token count
        completion_only_loss=True,  # prompt/completion rows: only the caption carries loss
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate, num_train_epochs=recipe.num_train_epochs, max_steps=recipe.max_steps,
        warmup_steps=recipe.warmup_steps, seed=recipe.seed, data_seed=recipe.seed,
        bf16=recipe.bf16, gradient_checkpointing=recipe.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if recipe.gradient_checkpointing else None,
        save_strategy="steps", save_steps=recipe.save_steps, save_total_limit=2,
        logging_steps=1, report_to="none", disable_tqdm=True, use_cpu=use_cpu,
        dataloader_num_workers=0,
    )
    if recipe.task == CONVERSATION:  # `messages` rows: the loss on the assistant turns (the template's markers)
        kwargs.update(completion_only_loss=None, assistant_only_loss=True)
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def lora_config(recipe: Recipe):
    if not recipe.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules=recipe.target_modules, modules_to_save=list(recipe.modules_to_save) or None,
                      task_type="CAUSAL_LM")


def _loss_callback(pipes, history: list[dict]):
    from transformers import TrainerCallback

    class PipesLoss(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                point = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                         "loss": round(float(logs["loss"]), 6)}
                history.append(point)
                pipes.log.info(f"train step {point['step']}/{state.max_steps} loss {point['loss']:.4f}")

    return PipesLoss()


def save_model_dir(trainer, processor, out: Path) -> None:
    """merged weights + the adapter + processor + tokenizer + chat template, loadable by transformers and vLLM."""
    if out.exists():
        shutil.rmtree(out)
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # LoRA
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)  # processor + image processor + tokenizer + chat_template
    processor.tokenizer.chat_template = processor.chat_template
    processor.tokenizer.save_pretrained(out)  # vLLM renders prompts with the tokenizer's template


def train(spec: dict, pipes) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTTrainer

    from viscon_dagster.core.captioner.training_data import load_training_file

    recipe = Recipe.from_dict(spec["recipe"])
    work = Path(spec["work_dir"])
    checkpoints = work / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    processor = load_processor(spec["base_model"], recipe)
    served_template = processor.chat_template
    if recipe.task == CONVERSATION and recipe.training_chat_template:
        from viscon_dagster.training.chat_templates import training_template

        processor.chat_template = training_template(recipe.training_chat_template)
    dtype = torch.bfloat16 if recipe.bf16 else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(spec["base_model"], dtype=dtype)
    dataset = load_training_file(spec["train_file"])
    history: list[dict] = []
    args = sft_config(recipe, str(checkpoints), use_cpu=not torch.cuda.is_available(), **spec.get("overrides", {}))
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                         peft_config=lora_config(recipe), callbacks=[_loss_callback(pipes, history)])
    last = get_last_checkpoint(str(checkpoints))
    resumed_from = int(last.rsplit("-", 1)[1]) if last else 0
    if last:
        pipes.log.info(f"resuming from {Path(last).name} (step {resumed_from})")
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - t0
    summary = {
        "steps": trainer.state.global_step, "resumed_from_step": resumed_from, "train_rows": len(dataset),
        "train_loss": round(float(result.training_loss), 6), "train_wall_s": round(wall, 3),
        "train_samples_per_s": round(float(result.metrics.get("train_samples_per_second", 0.0)), 3),
        "loss_history": history, "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
    }
    if recipe.task == CONVERSATION:  # the ablation states what its budget cost
        gpus = trainer.args.world_size if torch.cuda.is_available() else 0
        summary.update(device=torch.cuda.get_device_name(0) if gpus else "cpu", gpus=gpus,
                       gpu_hours=round(wall * gpus / 3600, 4))
    processor.chat_template = served_template  # the checkpoint is served with its own template
    if trainer.accelerator.is_main_process:
        save_model_dir(trainer, processor, work / "model")
        summary["weights_sha256"] = weights_sha(work / "model")
        (work / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _open_pipes():
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if DAGSTER_PIPES_CONTEXT_ENV_VAR in os.environ and _is_main_process():
        return open_dagster_pipes()
    from contextlib import nullcontext

    return nullcontext(_Printer())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", help="JSON file with the spec (under Dagster Pipes: the extras)")
    a = parser.parse_args(argv)
    with _open_pipes() as pipes:
        spec = dict(pipes.extras) if pipes.extras else json.loads(Path(a.spec).read_text())
        summary = train(spec, pipes)
        if _is_main_process():
            pipes.report_asset_materialization(
                metadata={k: v for k, v in summary.items() if k != "loss_history"} | {
                    "loss_history": {"raw_value": summary["loss_history"], "type": "json"}},
                data_version=summary["weights_sha256"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
