"""The contextual captioner: training pairs → a TRL-trained student (in its own process, via Dagster Pipes); its
evaluation is assets/captioner_evaluation.py. Domain logic lives in core/captioner/; the training process is
viscon_dagster/training/train_captioner.py.
"""


import hashlib
import json
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa

from viscon_dagster.assets.per_shard import config_defaults
from viscon_dagster.assets.spec import teacher_chain
from viscon_dagster.checks.captioner_checks import check_split, split_check_spec
from viscon_dagster.core.captioner.card import loss_sparkline, model_card
from viscon_dagster.core.captioner.pairs import HELD_OUT, build_pairs
from viscon_dagster.core.captioner.portable import name_base_by_label
from viscon_dagster.core.captioner.published import (
    PublishedCaptioner,
    write_current,
)
from viscon_dagster.core.captioner.recipes import RECIPES, TINY_STUDENT, Recipe, recipe
from viscon_dagster.core.captioner.weights import upload_model_dir
from viscon_dagster.core.chain.captions import TEACHER_DEFAULTS
from viscon_dagster.core.chain.prompts import CAPTION
from viscon_dagster.core.exports.split import DEFAULT_TEST_FRACTION
from viscon_dagster.core.files.parquet import write_parquet
from viscon_dagster.core.models.labels import model_label
from viscon_dagster.core.models.request import SamplingParams
from viscon_dagster.core.versions import code_version
from viscon_dagster.gpu import GPU_ASSET_KWARGS
from viscon_dagster.partitions import captioner_recipes
from viscon_dagster.paths import models_dir, viscon_home
from viscon_dagster.resources.local_models import require_local_model
from viscon_dagster.resources.storage import StorageResource
from viscon_dagster.resources.tokenizer import TokenizerResource

GROUP = "captioner"
TEACHER_CHAIN = teacher_chain()  # whose captions the student learns
PAIRS = dg.AssetKey("captioner_training_pairs")
CAPTIONER = dg.AssetKey("contextual_captioner")
EVALUATION = dg.AssetKey("captioner_evaluation")
TRAINING_MODULE = "viscon_dagster.training.train_captioner"


class PairsConfig(dg.Config):
    # the teacher's caption settings: the rebuilt request must match the fingerprint the caption row recorded
    context_tokens: int = TEACHER_DEFAULTS.context_tokens
    teacher_max_tokens: int = TEACHER_DEFAULTS.max_tokens
    teacher_temperature: float = TEACHER_DEFAULTS.temperature
    test_fraction: float = DEFAULT_TEST_FRACTION  # the release's split (viscon_100k_release config)
    split_seed: int = 0


def pairs_version() -> str:
    """The pair rules: the teacher's prompt and the pairs' settings."""
    return code_version(PAIRS.path[-1], prompt=CAPTION.version, settings=config_defaults(PairsConfig))


@dg.asset(key=PAIRS, group_name=GROUP, kinds={"parquet"},
          code_version=pairs_version(),
          deps=[dg.AssetDep(TEACHER_CHAIN.key("captions"))], check_specs=[split_check_spec(PAIRS)],
          description="Each usable teacher caption with the exact request the teacher saw (rebuilt by the chain's "
                      "code, checked against its fingerprint), split train / held-out by the release's page-URL hash.")
def captioner_training_pairs(context: dg.AssetExecutionContext, config: PairsConfig, storage: StorageResource,
                             tokenizer: TokenizerResource):
    count = lambda text: tokenizer.count_tokens([text])[0]  # noqa: E731
    params = SamplingParams(max_tokens=config.teacher_max_tokens, temperature=config.teacher_temperature)
    built = build_pairs(storage.root_path(), lambda name: TEACHER_CHAIN.key(name).path, params, count,
                        config.context_tokens, config.test_fraction, config.split_seed)
    table = built.table()
    write_parquet(built.skipped_table(), storage.path("captioner_training_pairs_skipped.parquet"))
    splits = table.column("split").to_pylist()
    reasons: dict[str, int] = {}
    for r in built.skipped:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    return dg.MaterializeResult(value=table, metadata={
        "dagster/row_count": table.num_rows, "train": splits.count("train"), "held_out": splits.count(HELD_OUT),
        "shards": len(built.shards), "teachers": sorted(set(table.column("teacher").to_pylist())),
        "prompt_versions": sorted(set(table.column("prompt_version").to_pylist())) or [CAPTION.version],
        "teacher_statuses": dict(built.caption_statuses), "skipped": len(built.skipped),
        "skipped_reasons": reasons,
    }, check_results=[check_split(table, PAIRS)])


class CaptionerConfig(dg.Config):
    base_model: str | None = None  # override the recipe's base (e.g. a local SmolVLM folder)
    max_steps: int | None = None  # cap the recipe's optimiser steps (the demo's short run)
    work_dir: str | None = None  # checkpoints (resume from here); default $VISCON_HOME/training/<recipe>/<key>
    launcher: list[str] = [sys.executable, "-m"]  # e.g. ["accelerate", "launch", "--num_processes", "4", "-m"]


def base_model_path(r: Recipe, override: str | None, what: str = "captioner recipe") -> str:
    """The base checkpoint of a recipe (the captioner's or the ablation's): the override, a hub id / folder, or the
    tiny student `viscon models tiny` builds."""
    base = override or (str(models_dir() / TINY_STUDENT) if r.base_model == TINY_STUDENT else r.base_model)
    require_local_model(base, f"the base model of {what} {r.name!r}",
                        "the recipe's base_model (core/captioner/recipes.py) or the asset's base_model config")
    return base


def _teacher(pairs: pa.Table) -> str:
    return ", ".join(sorted(set(pairs.column("teacher").to_pylist()))) or "none"


def loss_markdown(history: list[dict]) -> str:
    if not history:
        return "no loss logged"
    hi = max(p["loss"] for p in history)
    every = max(1, len(history) // 20)
    rows = [f"| {p['step']} | {p['epoch']} | {p['loss']:.4f} |" for p in history[::every]]
    if history[-1] is not history[::every][-1]:
        rows.append(f"| {history[-1]['step']} | {history[-1]['epoch']} | {history[-1]['loss']:.4f} |")
    return "\n".join([f"loss `{loss_sparkline(history)}` ({hi:.4f} → {history[-1]['loss']:.4f})", "",
                      "| step | epoch | loss |",
                      "|---|---|---|", *rows])


def captioner_version() -> str:
    """Every recipe (a static partition set: one version for all) and the training settings."""
    return code_version(CAPTIONER.path[-1], settings={
        "recipes": {name: r.fingerprint() for name, r in RECIPES.items()},
        **config_defaults(CaptionerConfig, "work_dir", "launcher")})


@dg.asset(key=CAPTIONER, partitions_def=captioner_recipes, group_name=GROUP, kinds={"pytorch", "huggingface"},
          code_version=captioner_version(),
          ins={"pairs": dg.AssetIn(PAIRS)},
          required_resource_keys={"pipes_subprocess_client", "storage"}, **GPU_ASSET_KWARGS,
          description="The student VLM fine-tuned (TRL SFTTrainer, LoRA on the text model by default) on the teacher's "
                      "captions, in its own process through Dagster Pipes; a model directory in storage at "
                      "contextual_captioner/<recipe>/<sha12>/ (data version: the hash of the merged weights).")
def contextual_captioner(context: dg.AssetExecutionContext, config: CaptionerConfig, pairs: pa.Table):
    storage: StorageResource = context.resources.storage
    pipes: dg.PipesSubprocessClient = context.resources.pipes_subprocess_client
    r = recipe(context.partition_key)
    base = base_model_path(r, config.base_model)
    base_label = model_label(base)
    train = [p for p in pairs.to_pylist() if p["split"] != HELD_OUT]
    if not train:
        raise dg.Failure(f"no training pairs: materialize the teacher captions first ({pairs.num_rows} pairs, "
                         "none in the train split)")
    key = hashlib.sha256(json.dumps([r.as_dict(), base_label, config.max_steps,
                                     [p["fingerprint"] for p in train]]).encode()).hexdigest()[:12]
    work = Path(config.work_dir) if config.work_dir else viscon_home() / "training" / r.name / key
    train_file = work / "data" / "train.parquet"
    if not train_file.exists():  # a resumed run keeps the rows its checkpoints were trained on
        from viscon_dagster.core.captioner.training_data import write_training_file

        images = [storage.path(p["image_path"]).read_bytes() for p in train]
        write_training_file(train, images, train_file)
    spec = {"recipe": r.as_dict(), "base_model": base, "train_file": str(train_file), "work_dir": str(work),
            "overrides": {"max_steps": config.max_steps} if config.max_steps else {}}
    result = pipes.run(context=context, command=[*config.launcher, TRAINING_MODULE],
                                         extras=spec).get_materialize_result()
    sha = result.data_version.value
    summary = json.loads((work / "train_summary.json").read_text())
    published = PublishedCaptioner.create(r.name, sha, base_label, _teacher(pairs))
    counts = {"train": len(train), "test": pairs.num_rows - len(train)}
    (work / "model" / "training.json").write_text(json.dumps(
        {"label": published.label, "recipe": r.as_dict(), "base_model": base_label, "teacher": published.teacher,
         "counts": counts, **{k: v for k, v in summary.items() if k != "weights_sha256"}}, indent=2))
    (work / "model" / "README.md").write_text(
        model_card(published.label, r.as_dict(), base_label, published.teacher, counts, summary))
    name_base_by_label(work / "model", str(base), base_label)  # the adapter names its base by path otherwise
    upload_model_dir(work / "model", storage.path(published.path))
    write_current(storage.root_path(), published)  # last: the checkpoint is complete when it is named
    history = summary["loss_history"]
    return dg.MaterializeResult(data_version=dg.DataVersion(sha), metadata={
        **(result.metadata or {}), "label": published.label, "path": published.path,
        "base_model": base_label, "teacher": published.teacher, "train_pairs": len(train),
        "loss_curve": dg.MetadataValue.md(loss_markdown(history)),
    })


# the evaluation, which names the judge model, is built with it: assets/captioner_evaluation.py
training_assets = [captioner_training_pairs, contextual_captioner]
