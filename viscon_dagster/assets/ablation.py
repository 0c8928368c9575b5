"""The paper's ablation (§5.3 / Table 1) as assets of a chain: does the release's data train a better model, and
which mix of it trains the best one?

    benchmark_items → decontaminated_mixes → mix_finetune[mix] → mix_benchmark[mix] → ablation_report

`ablation_assets(spec)` builds them for a chain (the 100K chain: unprefixed keys; VisCon-1M: `viscon_1m/…`), in the
chain's group. The mixes are a static partition set (`ablation_mixes`: the seven mixes and `none`, the base model
untouched); every partition trains the same target recipe with the same seed and the same budget, in the `gpu`
pool, through the Pipes trainer the captioner uses (task `conversation`; a killed run resumes from its checkpoint).
Nothing here runs on its own: the ablation is the most GPU-hungry part of the project (docs/ablation.md).
Domain logic: core/ablation/.
"""

import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa

from viscon_dagster.assets.captioner import base_model_path
from viscon_dagster.assets.per_shard import config_defaults
from viscon_dagster.assets.spec import ChainSpec
from viscon_dagster.checks.ablation_checks import check_clean, check_leaky, clean_check_spec, leaky_check_spec
from viscon_dagster.core.ablation.benchmark import (
    BENCHMARK_SCHEMA,
    CHAIN_SOURCE,
    HoldOut,
    Skipped,
    benchmark_fingerprint,
    chain_items,
    iter_seed_bench,
)
from viscon_dagster.core.ablation.decontam import (
    DEFAULT_MAX_DISTANCE,
    DROPPED_SCHEMA,
    MIX_SCHEMA,
    BenchmarkIndex,
    decontaminate,
    image_phashes,
    normalise_question,
    remaining_matches,
)
from viscon_dagster.core.ablation.mixes import BASE, BUDGETS, token_budget_order
from viscon_dagster.core.ablation.report import (
    MixScores,
    build_report,
    card_section,
    plot_png,
    report_markdown,
    write_report,
)
from viscon_dagster.core.ablation.scoring import METHODS, Scorer
from viscon_dagster.core.captioner.card import loss_sparkline
from viscon_dagster.core.captioner.recipes import ABLATION_RECIPES, Recipe, ablation_recipe
from viscon_dagster.core.captioner.weights import local_model_dir, upload_model_dir
from viscon_dagster.core.chain.conversations import MIXES
from viscon_dagster.core.exports.split import DEFAULT_TEST_FRACTION
from viscon_dagster.core.exports.versions import ReleaseNotFound, current_release_path
from viscon_dagster.core.files.atomic import write_bytes_atomic, write_text_atomic
from viscon_dagster.core.files.parquet import ParquetStreamWriter, read_parquet, write_parquet
from viscon_dagster.core.models.labels import model_label
from viscon_dagster.core.versions import code_version
from viscon_dagster.gpu import GPU_ASSET_KWARGS, gpu_run_tags
from viscon_dagster.partitions import ablation_mixes
from viscon_dagster.paths import viscon_home
from viscon_dagster.resources.embedder import EmbedderResource
from viscon_dagster.resources.local_models import require_local_model
from viscon_dagster.resources.storage import StorageResource, upath_for

TRAINING_MODULE = "viscon_dagster.training.train_captioner"
CURRENT = "current.json"
HOLDOUT = "holdout.json"


class BenchmarkConfig(dg.Config):
    # "chain": this chain's own held-out MCQ; or a SEED-Bench-format benchmark: a folder, file://, s3://…, or
    # hf://datasets/lmms-lab/SEED-Bench (docs/ablation.md)
    source: str = CHAIN_SOURCE
    # pages the mixes never train on (decontaminated_mixes reads this): the release's test split …
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0
    holdout_shards: list[str] = []  # … and every page of these shards (the chain source's held-out shards)
    dimensions: list[int] | None = None  # SEED-Bench question_type_id to keep (default: every image dimension)
    limit: int | None = None  # at most this many items (in the source's order)


class DecontamConfig(dg.Config):
    mixes: list[str] = list(MIXES)
    max_distance: int = DEFAULT_MAX_DISTANCE  # pHash bits; < 0: exact image bytes only
    match_questions: bool = True
    embedding_threshold: float | None = None  # e.g. 0.95: drop embedding near-duplicate questions too (embedder)


class FinetuneConfig(dg.Config):
    recipe: str = "tiny-ablation"  # core/captioner/recipes.ABLATION_RECIPES; the same for every mix
    base_model: str | None = None  # override the recipe's base (a local folder of it)
    # equal training budget per mix: "steps" (default: every mix trains max_steps optimiser steps of the same
    # batch, cycling through a small mix) or "tokens" (every mix trains one pass over budget_tokens text tokens)
    budget: str = "steps"
    max_steps: int | None = None  # the steps budget; default: the recipe's max_steps
    budget_tokens: int | None = None  # the tokens budget
    work_dir: str | None = None  # checkpoints (resumed from); default $VISCON_HOME/training/ablation/…
    launcher: list[str] = [sys.executable, "-m"]  # e.g. ["accelerate", "launch", "--num_processes", "8", "-m"]


class MixBenchmarkConfig(dg.Config):
    method: str = "letter_logprob"  # or "greedy" (core/ablation/scoring.py says why)
    batch_size: int = 8
    device: str = "auto"


class ReportConfig(dg.Config):
    resamples: int = 2000  # bootstrap resamples of the accuracy intervals
    seed: int = 0
    alpha: float = 0.05
    gate: bool = True  # the release is marked "not recommended" when leaky does not beat the base


@dataclass(frozen=True)
class Ablation:
    spec: ChainSpec
    assets: list[dg.AssetsDefinition]
    jobs: list


def _loss_line(history: list[dict]) -> str:
    if not history:
        return "no loss logged"
    return (f"loss `{loss_sparkline(history)}` ({history[0]['loss']:.4f} → {history[-1]['loss']:.4f} over "
            f"{history[-1]['step']} steps)")


def ablation_assets(spec: ChainSpec) -> Ablation:
    """The ablation of one chain: five assets (two with checks) and the job that runs the mixes' partitions."""
    bench_key, mixes_key = spec.key("benchmark_items"), spec.key("decontaminated_mixes")
    tune_key, score_key, report_key = spec.key("mix_finetune"), spec.key("mix_benchmark"), spec.key("ablation_report")
    folder = {k: spec.sibling(k.path[-1]) for k in (bench_key, mixes_key, tune_key, score_key, report_key)}

    def current_file(storage: StorageResource, mix: str):
        return storage.path(folder[tune_key], mix, CURRENT)

    @dg.asset(key=bench_key, group_name=spec.group, kinds={"parquet"},
              deps=[spec.key("unique_qa_pairs"), spec.key("captions")],
              code_version=code_version("benchmark_items", settings=config_defaults(BenchmarkConfig)),
              description="The held-out benchmark the mixes are scored on, in SEED-Bench's format (question, four "
                          "options, answer letter, image, dimension): SEED-Bench from a folder, S3 or the Hub, or the "
                          "chain's own MCQ on held-out pages (the release's test split and any held-out shards).")
    def _benchmark_items(context: dg.AssetExecutionContext, config: BenchmarkConfig, storage: StorageResource):
        holdout = HoldOut(config.test_fraction, config.split_seed, tuple(config.holdout_shards))
        root = storage.root_path()
        if config.source == CHAIN_SOURCE:
            shards = sorted(context.instance.get_materialized_partitions(spec.key("unique_qa_pairs")))
            if not shards:
                raise dg.Failure(f"no materialized shard of {spec.key('unique_qa_pairs').to_user_string()}: "
                                 "materialize the chain first, or set source to a SEED-Bench location")
            unknown = sorted(set(config.holdout_shards) - set(shards))
            if unknown:
                raise dg.Failure(f"holdout_shards {unknown} are not materialized shards of this chain ({shards})")

            def tables():
                for shard in shards:
                    yield (shard, read_parquet(storage.partition_path(spec.key("unique_qa_pairs"), shard)),
                           read_parquet(storage.partition_path(spec.key("captions"), shard)))

            found = chain_items(tables(), holdout, lambda path: (root / path).read_bytes())
            label = f"{spec.group} held-out MCQ"
        else:
            location = upath_for(config.source, storage.options_for(config.source))
            try:
                found = iter_seed_bench(location, storage_options=storage.options_for(config.source) or None,
                                        dimensions=config.dimensions, limit=config.limit,
                                        cache_dir=str(viscon_home() / "cache" / "datasets"))
            except FileNotFoundError as e:
                raise dg.Failure(str(e)) from None
            label = config.source
        rows, skipped = [], []
        for item in found:
            if isinstance(item, Skipped):
                skipped.append({"item_id": item.item_id, "reason": item.reason})
                continue
            if config.limit is not None and len(rows) >= config.limit:
                break
            path = item.image_path
            if path is None:  # an external benchmark's image goes to storage once, by content
                sha = hashlib.sha256(item.image).hexdigest()
                path = f"{folder[bench_key]}/images/{sha[:2]}/{sha}"
                if not (root / path).exists():
                    write_bytes_atomic(root / path, item.image)
            rows.append(item.row(path))
        table = pa.Table.from_pylist(rows, schema=BENCHMARK_SCHEMA)
        reasons: dict[str, int] = {}
        for s in skipped:
            reasons[s["reason"].split(":")[0]] = reasons.get(s["reason"].split(":")[0], 0) + 1
        if not table.num_rows:
            raise dg.Failure(f"no usable benchmark item from {label} (skipped: {reasons or 'none found'})"
                             + ("; hold out a shard (holdout_shards) or raise test_fraction"
                                if config.source == CHAIN_SOURCE else ""))
        write_parquet(pa.Table.from_pylist(skipped, schema=pa.schema([("item_id", pa.string()),
                                                                       ("reason", pa.string())])),
                      storage.path(folder[bench_key], "skipped.parquet"))
        write_text_atomic(storage.path(folder[bench_key], HOLDOUT),
                          json.dumps({"source": label, **holdout.as_dict()}, indent=2) + "\n")
        answers = table.column("answer").to_pylist()
        dims = table.column("dimension").to_pylist()
        return dg.MaterializeResult(value=table, metadata={
            "dagster/row_count": table.num_rows, "source": label, "benchmark": benchmark_fingerprint(table),
            "held_out": dg.MetadataValue.json(holdout.as_dict()), "skipped": len(skipped), "skipped_reasons": reasons,
            "answers": {letter: answers.count(letter) for letter in "ABCD"},
            "dimensions": {d: dims.count(d) for d in sorted({d for d in dims if d})},
        })

    @dg.asset(key=mixes_key, group_name=spec.group, kinds={"parquet"},
              ins={"items": dg.AssetIn(bench_key)}, deps=[spec.key("conversations")],
              check_specs=[clean_check_spec(mixes_key)],
              code_version=code_version("decontaminated_mixes", settings=config_defaults(DecontamConfig)),
              description="Every mix's training records, less held-out pages and any record whose image (sha256, "
                          "pHash) or question (normalised text; optionally an embedding near-duplicate) matches a "
                          "benchmark item; <mix>.parquet per mix and dropped.parquet with each drop's reason.")
    def _decontaminated_mixes(context: dg.AssetExecutionContext, config: DecontamConfig, items: pa.Table,
                              storage: StorageResource, embedder: EmbedderResource):
        if unknown := sorted(set(config.mixes) - set(MIXES)):
            raise dg.Failure(f"unknown mixes {unknown} (known: {list(MIXES)})")
        shards = sorted(context.instance.get_materialized_partitions(spec.key("conversations")))
        if not shards:
            raise dg.Failure(f"no materialized shard of {spec.key('conversations').to_user_string()}")
        holdout_file = storage.path(folder[bench_key], HOLDOUT)
        if not holdout_file.exists():
            raise dg.Failure(f"{holdout_file} is missing: rematerialize {bench_key.to_user_string()} (it records "
                             "which pages the mixes may not train on)")
        holdout = HoldOut.from_dict(json.loads(holdout_file.read_text()))
        embed = None
        embeddings = None
        if config.embedding_threshold is not None:
            embed = lambda texts: embedder.embed(texts)  # noqa: E731
            embeddings = embed([normalise_question(q) for q in items.column("question").to_pylist()])
        index = BenchmarkIndex(items, max_distance=config.max_distance, match_questions=config.match_questions,
                               embeddings=embeddings, embedding_threshold=config.embedding_threshold)
        root = storage.root_path()
        read = lambda path: (root / path).read_bytes()  # noqa: E731
        kept: dict[str, int] = {m: 0 for m in config.mixes}
        by_mix: dict[str, dict[str, int]] = {m: {} for m in config.mixes}
        by_shard: dict[str, dict[str, int]] = {}
        writers = {m: ParquetStreamWriter(storage.path(folder[mixes_key], f"{m}.parquet"), MIX_SCHEMA)
                   for m in config.mixes}
        dropped = ParquetStreamWriter(storage.path(folder[mixes_key], "dropped.parquet"), DROPPED_SCHEMA)
        try:
            for shard in shards:
                table = read_parquet(storage.partition_path(spec.key("conversations"), shard))
                records = [r for r in table.to_pylist() if r["mix"] in writers]
                phashes = image_phashes((r["image"] for r in records), read)
                result = decontaminate(records, index, holdout.reason, phashes, embed)
                for m in config.mixes:
                    rows = [r for r in result.kept if r["mix"] == m]
                    writers[m].write(rows)
                    kept[m] += len(rows)
                dropped.write(result.dropped)
                for (mix, reason), n in result.counts.items():
                    by_mix[mix][reason] = by_mix[mix].get(reason, 0) + n
                    by_shard.setdefault(shard, {})[reason] = by_shard.get(shard, {}).get(reason, 0) + n
            for w in [*writers.values(), dropped]:
                w.close()
        except BaseException:
            for w in [*writers.values(), dropped]:
                w.abort()
            raise
        # the blocking check reads what was published, with the strict default index
        strict = BenchmarkIndex(items)
        ids, matches = [], []
        for m in config.mixes:
            written = read_parquet(storage.path(folder[mixes_key], f"{m}.parquet"))
            rows = written.select(["id", "image_sha256", "image_phash", "question_hashes"]).to_pylist()
            ids += [r["id"] for r in rows]
            matches += remaining_matches(rows, strict)
        reasons = sorted({r for d in by_mix.values() for r in d})
        table_md = "\n".join(["| mix | kept | " + " | ".join(reasons) + " |", "|---|---|" + "---|" * len(reasons),
                              *[f"| `{m}` | {kept[m]} | " + " | ".join(str(by_mix[m].get(r, 0)) for r in reasons)
                                + " |" for m in config.mixes]])
        return dg.MaterializeResult(metadata={
            "kept": kept, "dropped_by_mix": dg.MetadataValue.json(by_mix),
            "dropped_by_shard": dg.MetadataValue.json(by_shard), "drops": dg.MetadataValue.md(table_md),
            "shards": len(shards), "benchmark_items": items.num_rows, "benchmark": benchmark_fingerprint(items),
            "held_out": dg.MetadataValue.json(holdout.as_dict()),
            "matching": dg.MetadataValue.json({"max_distance": config.max_distance,
                                               "match_questions": config.match_questions,
                                               "embedding_threshold": config.embedding_threshold}),
        }, check_results=[check_clean(ids, matches, mixes_key)])

    @dg.asset(key=tune_key, partitions_def=ablation_mixes, group_name=spec.group, kinds={"pytorch", "huggingface"},
              deps=[mixes_key], required_resource_keys={"pipes_subprocess_client", "storage"}, **GPU_ASSET_KWARGS,
              code_version=code_version("mix_finetune", settings={
                  "recipes": {n: r.fingerprint() for n, r in ABLATION_RECIPES.items()},
                  **config_defaults(FinetuneConfig, "work_dir", "launcher")}),
              description="The target model fine-tuned on one mix (none: the base untouched), the same recipe, seed "
                          "and budget for every mix, in its own process through Dagster Pipes (resumes from its last "
                          "checkpoint); model directory mix_finetune/<mix>/<sha12>/ and current.json; GPU hours in "
                          "metadata.")
    def _mix_finetune(context: dg.AssetExecutionContext, config: FinetuneConfig):
        storage: StorageResource = context.resources.storage
        mix = context.partition_key
        try:
            r = ablation_recipe(config.recipe)
        except KeyError as e:
            raise dg.Failure(str(e)) from None
        if config.budget not in BUDGETS:
            raise dg.Failure(f"unknown budget {config.budget!r} (known: {BUDGETS})")
        base = base_model_path(r, config.base_model, "ablation recipe")
        base_label = model_label(base)
        common = {"mix": mix, "recipe": r.as_dict(), "base_model": base_label, "base_path": base,
                  "budget": config.budget}
        if mix == BASE:
            info = {**common, "label": base_label, "path": None, "sha": None, "steps": 0, "train_records": 0,
                    "gpu_hours": 0.0}
            write_text_atomic(current_file(storage, mix), json.dumps(info, indent=2) + "\n")
            sha = hashlib.sha256(json.dumps(common, sort_keys=True).encode()).hexdigest()
            return dg.MaterializeResult(data_version=dg.DataVersion(sha), metadata={
                "label": base_label, "recipe": r.name, "gpu_hours": 0.0, "trained": False})
        source = storage.path(folder[mixes_key], f"{mix}.parquet")
        if not source.exists():
            raise dg.Failure(f"no decontaminated records of mix {mix!r}: materialize "
                             f"{mixes_key.to_user_string()} with {mix!r} in its mixes")
        records = read_parquet(source).select(["id", "image", "conversations"]).to_pylist()
        if not records:
            hint = " (materialize noncontextual_captions for the shards)" if mix == "noncontextual" else ""
            raise dg.Failure(f"mix {mix!r} has no training records after decontamination{hint}")
        records.sort(key=lambda rec: rec["id"])
        random.Random(r.seed).shuffle(records)
        overrides: dict = {}
        if config.budget == "steps":
            steps = config.max_steps or r.max_steps
            if steps <= 0:
                raise dg.Failure(f"recipe {r.name!r} has no max_steps: the steps budget needs max_steps")
            overrides["max_steps"] = steps
            order = records
            budget = {"budget": "steps", "max_steps": steps}
        else:
            if not config.budget_tokens:
                raise dg.Failure("the tokens budget needs budget_tokens")
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(base)
            lengths = [len(tok(" ".join(t["value"] for t in rec["conversations"]))["input_ids"]) for rec in records]
            order, total = token_budget_order(records, lengths, config.budget_tokens)
            overrides.update(max_steps=-1, num_train_epochs=1)
            budget = {"budget": "tokens", "budget_tokens": config.budget_tokens, "tokens": total}
        key = hashlib.sha256(json.dumps([r.as_dict(), base_label, budget, [rec["id"] for rec in order]])
                             .encode()).hexdigest()[:12]
        prefix = "_".join(spec.key_prefix) or "viscon_100k"
        work = Path(config.work_dir) if config.work_dir else viscon_home() / "training" / "ablation" / prefix / mix
        work = work / key if not config.work_dir else work
        train_file = work / "data" / "train.parquet"
        if not train_file.exists():  # a resumed run keeps the rows its checkpoints were trained on
            from viscon_dagster.core.ablation.training_rows import write_conversation_file

            root = storage.root_path()
            write_conversation_file(((rec, (root / rec["image"]).read_bytes()) for rec in order),
                                    train_file.with_suffix(".tmp"))
            train_file.with_suffix(".tmp").rename(train_file)
        spec_extras = {"recipe": r.as_dict(), "base_model": base, "train_file": str(train_file),
                       "work_dir": str(work), "overrides": overrides}
        pipes: dg.PipesSubprocessClient = context.resources.pipes_subprocess_client
        result = pipes.run(context=context, command=[*config.launcher, TRAINING_MODULE],
                           extras=spec_extras).get_materialize_result()
        sha = result.data_version.value
        summary = json.loads((work / "train_summary.json").read_text())
        path = f"{folder[tune_key]}/{mix}/{sha[:12]}"
        upload_model_dir(work / "model", storage.path(path))
        label = f"ablation/{spec.group}/{mix}/{r.name}@{sha[:12]}"
        info = {**common, "label": label, "path": path, "sha": sha, "steps": summary["steps"],
                "train_records": len(order), "unique_records": len(records), **budget,
                "gpu_hours": summary.get("gpu_hours"), "device": summary.get("device"),
                "train_wall_s": summary.get("train_wall_s"), "train_loss": summary.get("train_loss")}
        write_text_atomic(current_file(storage, mix), json.dumps(info, indent=2) + "\n")  # last: complete when named
        return dg.MaterializeResult(data_version=dg.DataVersion(sha), metadata={
            **{k: v for k, v in (result.metadata or {}).items() if k != "loss_history"},
            "label": label, "path": path, "recipe": r.name, "base_model": base_label, "trained": True,
            "train_records": len(order), "unique_records": len(records), **budget,
            "gpu_hours": summary.get("gpu_hours"), "device": summary.get("device"),
            "loss": dg.MetadataValue.md(_loss_line(summary.get("loss_history") or [])),
        })

    @dg.asset(key=score_key, partitions_def=ablation_mixes, group_name=spec.group, kinds={"parquet"},
              ins={"items": dg.AssetIn(bench_key)}, deps=[tune_key], **GPU_ASSET_KWARGS,
              code_version=code_version("mix_benchmark", settings=config_defaults(MixBenchmarkConfig,
                                                                                  "batch_size", "device")),
              description="The mix's model scored on every benchmark item (the letter's log-probability, or greedy "
                          "decoding): one row per item, so mixes are compared item by item.")
    def _mix_benchmark(context: dg.AssetExecutionContext, config: MixBenchmarkConfig, items: pa.Table,
                       storage: StorageResource):
        mix = context.partition_key
        if config.method not in METHODS:
            raise dg.Failure(f"unknown scoring method {config.method!r} (known: {METHODS})")
        info_file = current_file(storage, mix)
        if not info_file.exists():
            raise dg.Failure(f"no model for mix {mix!r}: materialize {tune_key.to_user_string()}[{mix}] first")
        info = json.loads(info_file.read_text())
        r = Recipe.from_dict(info["recipe"])
        if info["path"] is None:
            model_dir = info["base_path"]
            require_local_model(model_dir, f"the base model of mix {mix!r}", f"{tune_key.to_user_string()} config")
        else:
            model_dir = local_model_dir(storage.path(info["path"]),
                                        viscon_home() / "models" / "ablation" / mix / info["sha"][:12])
        root = storage.root_path()
        rows = items.to_pylist()
        t0 = time.perf_counter()
        scorer = Scorer(model_dir, device=config.device, bf16=r.bf16, do_image_splitting=r.do_image_splitting,
                        longest_edge=r.longest_edge)
        scored = []
        for start in range(0, len(rows), 256):  # a benchmark's images are read a chunk at a time
            chunk = rows[start:start + 256]
            try:
                scored += scorer.score(chunk, [(root / row["image_path"]).read_bytes() for row in chunk],
                                       config.method, config.batch_size)
            except ValueError as e:
                raise dg.Failure(str(e)) from None
        wall = time.perf_counter() - t0
        fingerprint = benchmark_fingerprint(items)
        table = pa.Table.from_pylist([{**s, "mix": mix, "model": info["label"], "recipe": r.name,
                                       "base_model": info["base_model"], "benchmark": fingerprint,
                                       "method": config.method} for s in scored], schema=SCORES_SCHEMA)
        gpus = 1 if scorer.device.startswith("cuda") else 0
        n_correct = sum(s["correct"] for s in scored)
        predicted = [s["predicted"] or "none" for s in scored]
        return dg.MaterializeResult(value=table, metadata={
            "accuracy": n_correct / len(scored), "correct": n_correct, "items": len(scored), "model": info["label"],
            "method": config.method, "benchmark": fingerprint, "device": scorer.device,
            "eval_wall_s": round(wall, 2), "gpu_hours": round(wall * gpus / 3600, 4),
            "predicted": {k: predicted.count(k) for k in sorted(set(predicted))},
        })

    @dg.asset(key=report_key, group_name=spec.group, kinds={"json", "markdown"},
              deps=[dg.AssetDep(score_key)], check_specs=[leaky_check_spec(report_key)],
              code_version=code_version("ablation_report", settings=config_defaults(ReportConfig)),
              description="Accuracy per mix with 95% bootstrap intervals, McNemar's exact test (leaky vs each mix, "
                          "each mix vs the base, Holm-corrected), Kendall τ against the paper's ordering, a plot; "
                          "report.json (read by the release card: the gate's verdict), report.md, accuracy.png.")
    def _ablation_report(context: dg.AssetExecutionContext, config: ReportConfig, storage: StorageResource):
        mixes = sorted(context.instance.get_materialized_partitions(score_key))
        scores = {}
        for mix in mixes:
            t = read_parquet(storage.partition_path(score_key, mix))
            info_file = current_file(storage, mix)
            info = json.loads(info_file.read_text()) if info_file.exists() else {}
            first = t.slice(0, 1).to_pylist()[0]
            scores[mix] = MixScores(mix, dict(zip(t.column("item_id").to_pylist(), t.column("correct").to_pylist())),
                                    first["model"], first["recipe"], first["base_model"], first["benchmark"],
                                    first["method"], info.get("gpu_hours"))
        try:
            report = build_report(scores, resamples=config.resamples, seed=config.seed, alpha=config.alpha,
                                  gate=config.gate)
        except ValueError as e:
            raise dg.Failure(str(e)) from None
        try:
            release = current_release_path(storage.root_path(), spec.release_name)
            report["release"] = {"name": spec.release_name, "version": release.name}
        except ReleaseNotFound:
            report["release"] = {"name": spec.release_name, "version": None}
        markdown = report_markdown(report, title=f"Ablation of {spec.release_name}")
        png = plot_png(report)
        out = storage.path(folder[report_key])
        write_report(out, report, markdown, png)
        return dg.MaterializeResult(metadata={
            "report": dg.MetadataValue.md(markdown),
            "card_section": dg.MetadataValue.md(card_section(report, markdown)),
            "ranking": report["ranking"], "kendall_tau": report["kendall_tau"],
            "recommended": str(report["gate"]["recommended"]), "gate": report["gate"]["reason"],
            "plot": f"{folder[report_key]}/accuracy.png", "items": report["items"],
            "release_version": str(report["release"]["version"]),
        }, check_results=[check_leaky(report["gate"], report_key)])

    assets = [_benchmark_items, _decontaminated_mixes, _mix_finetune, _mix_benchmark, _ablation_report]
    jobs = [dg.define_asset_job(spec.name("ablation_mixes"), selection=dg.AssetSelection.assets(tune_key, score_key),
                                partitions_def=ablation_mixes, tags=gpu_run_tags(),
                                description=f"Fine-tune and score the target model on mixes of {spec.group} "
                                            "(a partition per mix; GPU).")]
    return Ablation(spec, assets, jobs)


SCORES_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("mix", pa.string()), ("answer", pa.string()), ("predicted", pa.string()),
    ("correct", pa.bool_()), ("letter_logprobs", pa.list_(pa.float32())), ("response", pa.string()),
    ("model", pa.string()), ("recipe", pa.string()), ("base_model", pa.string()), ("benchmark", pa.string()),
    ("method", pa.string()),
])
