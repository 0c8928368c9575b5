"""The captioner's evaluation: the untuned base, the tuned student and the teacher scored on the held-out pages
(the scorecard: core/captioner/scorecard.py; the gate over it: core/captioner/gate.py), journaled, with
predictions, scores, a preview and the gate.json that VisCon-1M's caption backend reads."""

import json
import time

import dagster as dg
import pyarrow as pa

from viscon_dagster.assets.captioner import CAPTIONER, EVALUATION, GROUP, PAIRS, base_model_path
from viscon_dagster.assets.per_shard import config_defaults
from viscon_dagster.checks.captioner_checks import check_gate, gate_check_specs
from viscon_dagster.core.captioner.bootstrap import resample_indices
from viscon_dagster.core.captioner.card import model_card
from viscon_dagster.core.captioner.eval_preview import PREVIEW_FILE, choose_items, render_preview
from viscon_dagster.core.captioner.faithfulness import context_of
from viscon_dagster.core.captioner.gate import GatePolicy, decide
from viscon_dagster.core.captioner.judge import JUDGE, battles, win_rate
from viscon_dagster.core.captioner.metrics import PAPER_GAIN
from viscon_dagster.core.captioner.pairs import HELD_OUT, pair_request
from viscon_dagster.core.captioner.published import (
    GateResult,
    PublishedCaptioner,
    read_current,
    write_gate,
)
from viscon_dagster.core.captioner.recipes import recipe
from viscon_dagster.core.captioner.scorecard import (
    METRICS,
    SCORECARD_REVISION,
    TEACHER,
    build_scorecard,
    markdown_table,
)
from viscon_dagster.core.captioner.weights import local_model_dir
from viscon_dagster.core.files.atomic import write_text_atomic
from viscon_dagster.core.files.parquet import write_parquet
from viscon_dagster.core.models.labels import model_label
from viscon_dagster.core.models.request import ImageRef, SamplingParams
from viscon_dagster.core.versions import code_version
from viscon_dagster.gpu import GPU_ASSET_KWARGS
from viscon_dagster.partitions import captioner_recipes
from viscon_dagster.resources.captioner_backend import captioner_cache
from viscon_dagster.resources.models import ModelBackend
from viscon_dagster.resources.models.transformers_local import TransformersLocalBackend
from viscon_dagster.resources.storage import StorageResource


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
