"""The contextual captioner: training pairs → a TRL-trained student (in its own process, via Dagster Pipes)
→ its evaluation against the untuned base. Domain logic lives in core/captioner/; the training process is
viscon_dagster/training/train_captioner.py; the evaluation's scorecard and gate are core/captioner/scorecard.py
and core/captioner/gate.py.
"""


import hashlib
import json
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa

from viscon_dagster.assets.per_shard import config_defaults
from viscon_dagster.assets.spec import teacher_chain
from viscon_dagster.checks.captioner_checks import check_gate, check_split, gate_check_specs, split_check_spec
from viscon_dagster.core.captioner.bootstrap import resample_indices
from viscon_dagster.core.captioner.card import model_card
from viscon_dagster.core.captioner.eval_preview import PREVIEW_FILE, choose_items, render_preview
from viscon_dagster.core.captioner.faithfulness import context_of
from viscon_dagster.core.captioner.gate import GatePolicy, decide
from viscon_dagster.core.captioner.judge import JUDGE, battles, win_rate
from viscon_dagster.core.captioner.metrics import PAPER_GAIN
from viscon_dagster.core.captioner.pairs import HELD_OUT, build_pairs, pair_request
from viscon_dagster.core.captioner.published import (
    GateResult,
    PublishedCaptioner,
    read_current,
    write_current,
    write_gate,
)
from viscon_dagster.core.captioner.recipes import RECIPES, TINY_STUDENT, Recipe, recipe
from viscon_dagster.core.captioner.scorecard import (
    METRICS,
    SCORECARD_REVISION,
    TEACHER,
    build_scorecard,
    markdown_table,
)
from viscon_dagster.core.captioner.weights import local_model_dir, upload_model_dir
from viscon_dagster.core.chain.captions import TEACHER_DEFAULTS
from viscon_dagster.core.chain.prompts import CAPTION
from viscon_dagster.core.exports.split import DEFAULT_TEST_FRACTION
from viscon_dagster.core.files.atomic import write_text_atomic
from viscon_dagster.core.files.parquet import write_parquet
from viscon_dagster.core.models.labels import model_label
from viscon_dagster.core.models.request import ImageRef, SamplingParams
from viscon_dagster.core.versions import code_version
from viscon_dagster.gpu import GPU_ASSET_KWARGS
from viscon_dagster.partitions import captioner_recipes
from viscon_dagster.paths import models_dir, viscon_home
from viscon_dagster.resources.captioner_backend import captioner_cache
from viscon_dagster.resources.local_models import require_local_model
from viscon_dagster.resources.models import ModelBackend
from viscon_dagster.resources.models.transformers_local import TransformersLocalBackend
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


def base_model_path(r: Recipe, override: str | None) -> str:
    """The base checkpoint: the override, a hub id / folder, or the tiny student `viscon models tiny` builds."""
    base = override or (str(models_dir() / TINY_STUDENT) if r.base_model == TINY_STUDENT else r.base_model)
    require_local_model(base, f"the base model of captioner recipe {r.name!r}",
                        "the recipe's base_model (core/captioner/recipes.py) or the asset's base_model config")
    return base


def _teacher(pairs: pa.Table) -> str:
    return ", ".join(sorted(set(pairs.column("teacher").to_pylist()))) or "none"


def loss_markdown(history: list[dict]) -> str:
    if not history:
        return "no loss logged"
    lo, hi = min(p["loss"] for p in history), max(p["loss"] for p in history)
    bars = "▁▂▃▄▅▆▇█"
    spark = "".join(bars[int((p["loss"] - lo) / (hi - lo + 1e-12) * (len(bars) - 1))] for p in history)
    every = max(1, len(history) // 20)
    rows = [f"| {p['step']} | {p['epoch']} | {p['loss']:.4f} |" for p in history[::every]]
    if history[-1] is not history[::every][-1]:
        rows.append(f"| {history[-1]['step']} | {history[-1]['epoch']} | {history[-1]['loss']:.4f} |")
    return "\n".join([f"loss `{spark}` ({hi:.4f} → {history[-1]['loss']:.4f})", "", "| step | epoch | loss |",
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
    upload_model_dir(work / "model", storage.path(published.path))
    write_current(storage.root_path(), published)  # last: the checkpoint is complete when it is named
    history = summary["loss_history"]
    return dg.MaterializeResult(data_version=dg.DataVersion(sha), metadata={
        **(result.metadata or {}), "label": published.label, "path": published.path,
        "base_model": base_label, "teacher": published.teacher, "train_pairs": len(train),
        "loss_curve": dg.MetadataValue.md(loss_markdown(history)),
    })


class EvaluationConfig(dg.Config):
    base_model: str | None = None  # as in the training run's config
    batch_size: int = 16
    device: str = "auto"
    resamples: int = 1000  # bootstrap resamples
    seed: int = 0
    # CLIPScore's checkpoint (a CLIP or SigLIP hub id or folder, e.g. openai/clip-vit-base-patch32); None: skipped
    clip_model: str | None = None
    judge: bool = True  # ask the judge_model resource which caption is better; False: skipped
    judge_image: bool = True  # show the judge the image too (a VLM judge); False for a text-only judge
    judge_max_tokens: int = 128
    # the gate (core/captioner/gate.py): metrics the tuned model must beat the base on, the judge's win-rate
    # against the base (when it ran), faithfulness vs the teacher's, and whether gains must be significant
    gate_gains: list[str] = list(GatePolicy().gains)
    gate_judge: bool = GatePolicy().judge
    gate_faithfulness_margin: float | None = GatePolicy().faithfulness_margin
    gate_significance: bool = GatePolicy().significance
    preview_items: int = 6  # held-out images shown in preview.html

    def policy(self) -> GatePolicy:
        return GatePolicy(tuple(self.gate_gains), self.gate_judge, self.gate_faithfulness_margin,
                          self.gate_significance)


def evaluation_version(judge_label: str) -> str:
    """The metric set, the judge (its prompt's version and model label) and the gate policy."""
    return code_version(EVALUATION.path[-1], prompt=JUDGE.version,
                        models={"judge_model": judge_label}, settings={
                            "paper_gain": PAPER_GAIN, "scorecard": SCORECARD_REVISION,
                            "metrics": [m.key for m in METRICS],
                            **config_defaults(EvaluationConfig, "batch_size", "device", "preview_items")})


def _predict(backend, requests, journal, run_id) -> tuple[list[str], list[str | None]]:
    responses = backend.generate(requests, journal_dir=journal, lease_owner=run_id)
    return [(x.text or "").strip() if x.ok else "" for x in responses], [x.finish_reason for x in responses]


def _clip_scores(config: EvaluationConfig, images: list[bytes], captions: dict[str, list[str]]):
    import io

    from PIL import Image

    from viscon_dagster.core.captioner.clipscore import ClipScorer

    device = "cpu" if config.device == "auto" else config.device
    scorer = ClipScorer(config.clip_model, device=device)
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    emb = scorer.image_embeddings(pil)
    return {name: scorer.scores(emb, caps) for name, caps in captions.items()}


def _judge(context: dg.AssetExecutionContext, config: EvaluationConfig, judge_model: ModelBackend,
           storage: StorageResource, recipe_name: str, held_out: list[dict], contexts: list[str],
           captions: dict[str, list[str]], idx):
    """The judge's win-rates of the tuned captions against the base's and the teacher's, and its metadata."""
    params = SamplingParams(max_tokens=config.judge_max_tokens, temperature=0.0)
    options = storage.storage_options()
    images = [ImageRef(url=str(storage.path(p["image_path"])), sha256=p["image_sha256"], storage_options=options,
                       mime="image/jpeg") if config.judge_image else None for p in held_out]
    fights = {opponent: battles(contexts, captions["tuned"], captions[opponent], images, params, opponent)
              for opponent in ("base", TEACHER)}
    asked = [(opponent, b) for opponent, bs in fights.items() for b in bs if b.tuned_first is not None]
    requests = [r for _, b in asked for r in (b.tuned_first, b.other_first)]
    journal = storage.path(*EVALUATION.path, "_journal", f"{recipe_name}-judge")
    responses = judge_model.generate(requests, journal_dir=journal, lease_owner=context.run_id) if requests else []
    answers: dict[str, dict] = {o: {} for o in fights}
    for k, (opponent, b) in enumerate(asked):
        answers[opponent][b.item] = (responses[2 * k], responses[2 * k + 1])
    rates = {o: win_rate(o, fights[o], answers[o], idx) for o in fights}
    meta = {f"judge_{k}": v for k, v in judge_model.metadata(responses).items()} if responses else {}
    return rates, {"judge_model": judge_model.model_id, "judge_prompt_version": JUDGE.version,
                   "judge_requests": len(requests), "judge_from_journal": sum(r.cached for r in responses), **meta}


def build_evaluation_asset(judge_label: str) -> dg.AssetsDefinition:
    """The evaluation asset; its code version names the judge model (`judge_label`)."""

    @dg.asset(key=EVALUATION, partitions_def=captioner_recipes, group_name=GROUP, kinds={"parquet", "json"},
              code_version=evaluation_version(judge_label),
              ins={"pairs": dg.AssetIn(PAIRS)}, deps=[dg.AssetDep(CAPTIONER)],
              check_specs=gate_check_specs(EVALUATION), **GPU_ASSET_KWARGS,
              description="The untuned base and the tuned captioner caption the held-out split with the same prompts "
                          "and greedy decoding (journaled); the scorecard: BLEU, ROUGE-L, CIDEr-D, CLIPScore, a "
                          "judge's win-rates, context faithfulness, length and degeneracy, each with paired 95% "
                          "bootstrap intervals for base, tuned and teacher; the gate policy's verdict in gate.json "
                          "(read by the VisCon-1M chain); scores.md and preview.html.")
    def captioner_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, pairs: pa.Table,
                             storage: StorageResource, judge_model: ModelBackend):
        return evaluate(context, config, pairs, storage, judge_model)

    return captioner_evaluation


def evaluate(context: dg.AssetExecutionContext, config: EvaluationConfig, pairs: pa.Table, storage: StorageResource,
             judge_model: ModelBackend) -> dg.MaterializeResult:
    try:
        policy = config.policy()
    except ValueError as e:
        raise dg.Failure(str(e)) from None
    r = recipe(context.partition_key)
    store = storage.root_path()
    published = read_current(store, r.name)
    if published is None:
        raise dg.Failure(f"no published captioner for recipe {r.name!r}: materialize contextual_captioner first")
    held_out = [p for p in pairs.to_pylist() if p["split"] == HELD_OUT]
    if not held_out:
        raise dg.Failure("the held-out split is empty: more teacher captions are needed to evaluate")
    tuned_dir = local_model_dir(storage.path(published.path), captioner_cache(published))
    base = base_model_path(r, config.base_model)
    if model_label(base) != published.base_model:
        raise dg.Failure(f"the base model {model_label(base)} is not the one {published.label} was trained from "
                         f"({published.base_model}): set base_model as in its training run")
    params = SamplingParams(max_tokens=r.max_new_tokens, temperature=0.0)
    options = storage.storage_options()
    requests = [pair_request(p, ImageRef(url=str(storage.path(p["image_path"])), sha256=p["image_sha256"],
                                         storage_options=options, mime="image/jpeg"), params) for p in held_out]
    journal = storage.path(*EVALUATION.path, "_journal", r.name)
    captions, finish = {}, {}
    for name, model, label in (("base", base, published.base_model), ("tuned", tuned_dir, published.label)):
        backend = TransformersLocalBackend(model=model, model_label=label, batch_size=config.batch_size,
                                           device=config.device)
        captions[name], finish[name] = _predict(backend, requests, journal, context.run_id)
    refs = [p["caption"] for p in held_out]
    contexts = [context_of(p["prompt"]) for p in held_out]
    labels = {"base": published.base_model, "tuned": published.label, TEACHER: published.teacher}
    idx = resample_indices(len(held_out), config.resamples, config.seed)
    timings, skipped, extra = {}, {}, {}
    t0 = time.perf_counter()
    clip = None
    if config.clip_model:
        images = [storage.path(p["image_path"]).read_bytes() for p in held_out]
        clip = _clip_scores(config, images, {**captions, TEACHER: refs})
        extra["clip_model"] = model_label(config.clip_model)
    else:
        skipped["clip_score"] = "no clip_model set (a CLIP or SigLIP checkpoint in the evaluation's config)"
    timings["clip_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    judge = {}
    if config.judge:
        judge, judge_meta = _judge(context, config, judge_model, storage, r.name, held_out, contexts,
                                   {**captions, TEACHER: refs}, idx)
        extra.update(judge_meta)
    else:
        skipped["judge"] = "judge off in the evaluation's config"
    timings["judge_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    card = build_scorecard(refs, contexts, captions, labels, finish_reasons=finish, clip_scores=clip, judge=judge,
                           skipped=skipped, resamples=config.resamples, seed=config.seed, idx=idx)
    timings["metrics_s"] = round(time.perf_counter() - t0, 2)
    decision = decide(card, policy)
    table_md = markdown_table(card)
    gate_md = gate_markdown(decision, policy)
    out = storage.path(*EVALUATION.path, r.name)
    write_parquet(predictions_table(held_out, refs, captions, card), out / "predictions.parquet")
    scores = {"recipe": r.name, "checkpoint": published.label, "base_model": published.base_model,
              "teacher": published.teacher, **card.as_dict(), "gate": decision.as_dict(), "policy": policy.as_dict(),
              **extra}
    write_text_atomic(out / "scores.json", json.dumps(scores, indent=2, allow_nan=False, default=str) + "\n")
    write_text_atomic(out / "scores.md", table_md + "\n\n" + gate_md + "\n")
    items = choose_items([p["image_sha256"] for p in held_out], config.preview_items, config.seed)
    shown = {i: storage.path(held_out[i]["image_path"]).read_bytes() for i in items
             if storage.path(held_out[i]["image_path"]).exists()}
    write_text_atomic(out / PREVIEW_FILE, render_preview(
        f"captioner_evaluation[{r.name}] {published.label}", card, {**captions, TEACHER: refs}, contexts,
        [p["image_sha256"] for p in held_out], shown, [p["doc_url"] for p in held_out], decision.as_dict(), items))
    write_gate(store, GateResult(r.name, published.sha, decision.passed, gate_summary(card, decision, policy)))
    _update_card(storage, published, table_md + "\n\n" + gate_md)
    where = "/".join(EVALUATION.path) + f"/{r.name}"
    return dg.MaterializeResult(metadata={
        "checkpoint": published.label, "held_out": card.n, "scores": dg.MetadataValue.md(table_md),
        "gate": dg.MetadataValue.md(gate_md), "gate_passed": decision.passed, **flat_scores(card),
        "bleu_signature": card.bleu_signature, "skipped": skipped, **extra, **timings,
        "predictions": f"{where}/predictions.parquet", "preview": f"{where}/{PREVIEW_FILE}",
    }, check_results=check_gate(card, decision, EVALUATION))


def flat_scores(card) -> dict:
    """`<metric>_<system>` point values (and the judge's win-rates) for metadata plots and the gate record."""
    out = {}
    for key, m in card.metrics.items():
        for system, iv in m["scores"].items():
            if iv.value == iv.value:  # not NaN
                out[f"{key}_{system}"] = iv.value
    for opponent, w in card.judge.items():
        if w.win_rate is not None:
            out[f"judge_win_rate_vs_{opponent}"] = w.win_rate.value
    return out


def gate_summary(card, decision, policy) -> dict:
    return {**flat_scores(card), "bleu_signature": card.bleu_signature, "rules": [r.as_dict() for r in decision.rules],
            "policy": policy.as_dict(), "scorecard": json.loads(json.dumps(card.as_dict(), default=str))}


def gate_markdown(decision, policy) -> str:
    lines = [f"**gate: {'passed' if decision.passed else 'FAILED'}** (policy: gains on "
             f"{', '.join(policy.gains) or 'nothing'}, judge {'on' if policy.judge else 'off'}, faithfulness margin "
             f"{policy.faithfulness_margin}, significance {'required' if policy.significance else 'not required'})"]
    lines += [f"- {'✓' if r.passed else '✗'} {r.name}: {r.detail}" for r in decision.rules]
    return "\n".join(lines)


def predictions_table(held_out: list[dict], refs: list[str], captions: dict[str, list[str]], card) -> pa.Table:
    cols = {"doc_id": [p["doc_id"] for p in held_out], "doc_url": [p["doc_url"] for p in held_out],
            "position": pa.array([p["position"] for p in held_out], pa.int32()),
            "image_sha256": [p["image_sha256"] for p in held_out], "reference": refs,
            "base": captions["base"], "tuned": captions["tuned"]}
    for system, per in card.per_item.items():
        for key, values in per.items():
            cols[f"{system}_{key}"] = pa.array(values, pa.float64())
    for opponent, w in card.judge.items():
        cols[f"judge_tuned_vs_{opponent}"] = w.outcomes
    return pa.table(cols)


def _update_card(storage: StorageResource, published: PublishedCaptioner, table_md: str) -> None:
    """Put the evaluation into the checkpoint's model card (the weights, and so the sha, stay as they are)."""
    model_dir = storage.path(published.path)
    info = json.loads((model_dir / "training.json").read_text())
    write_text_atomic(model_dir / "README.md", model_card(published.label, info["recipe"], info["base_model"],
                                                          info["teacher"], info["counts"], info, table_md))


def captioner_assets(judge_label: str) -> list:
    """The captioner's assets; the evaluation's code version names `judge_label` (the judge_model resource's)."""
    return [captioner_training_pairs, contextual_captioner, build_evaluation_asset(judge_label)]
