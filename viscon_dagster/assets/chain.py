"""The VisCon chain, built per `ChainSpec`: filtered docs → images → captions → Q&A → dedup → conversations
(stages 2–8) and the release (stage 9), with the chain's jobs and selections.

`build_chain(ChainSpec(...))` returns a `Chain`. The teacher chain (VisCon-100K) is its first instance (keys
unprefixed, kept as they always were); the trained captioner's chain (VisCon-1M) is another, with its own key
prefix, group, release and partitions. Jobs and selections go by the chain's group, never by bare keys, so two
chains never collide. Each asset reads its inputs, calls `core/`, writes a table per shard and reports metadata
and a great-expectations check per shard (`assets/per_shard.py`) — nothing else lives here.
"""

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa

from viscon_dagster.assets.docs import filtered_docs_asset
from viscon_dagster.assets.exports import release_asset
from viscon_dagster.assets.images import images_asset
from viscon_dagster.assets.metadata import as_metadata, status_counts, table_metadata
from viscon_dagster.assets.per_shard import ShardOutput, config_defaults, materialize_shards, read_input
from viscon_dagster.assets.spec import ChainSpec
from viscon_dagster.checks.caption_checks import captions_check_spec, check_captions
from viscon_dagster.checks.conversation_checks import check_conversations, conversations_check_spec
from viscon_dagster.checks.qa_checks import check_qa, qa_check_spec
from viscon_dagster.core.chain.captions import (
    CAPTIONS_SCHEMA,
    TEACHER_DEFAULTS,
    caption_jobs,
    caption_request,
    caption_rows,
)
from viscon_dagster.core.chain.conversations import MIXES, build_conversations
from viscon_dagster.core.chain.image_samples import image_samples
from viscon_dagster.core.chain.leakage import leakage_summary
from viscon_dagster.core.chain.prompts import CAPTION, NONCONTEXTUAL, QA
from viscon_dagster.core.chain.qa import QA_SCHEMA, qa_request, qa_rows
from viscon_dagster.core.chain.question_dedup import mark_duplicates
from viscon_dagster.core.files.parquet import read_parquet
from viscon_dagster.core.models.labels import model_label
from viscon_dagster.core.models.request import ImageRef, SamplingParams
from viscon_dagster.core.versions import code_version
from viscon_dagster.dead_runs import journal_checks
from viscon_dagster.gpu import GPU_ASSET_KWARGS, gpu_run_tags
from viscon_dagster.resources.embedder import EmbedderResource
from viscon_dagster.resources.models.base import ModelBackend
from viscon_dagster.resources.storage import StorageResource
from viscon_dagster.resources.tokenizer import TokenizerResource

warnings.filterwarnings("ignore", message=".*`backfill_policy`.*beta", category=dg.BetaWarning)

class CaptionConfig(dg.Config):
    context_tokens: int = TEACHER_DEFAULTS.context_tokens  # token budget of the page context around the image
    max_tokens: int = TEACHER_DEFAULTS.max_tokens          # longest caption
    temperature: float = TEACHER_DEFAULTS.temperature
    seed: int = 0  # sampling's seed when temperature > 0: a rerun samples the same captions
    min_chars: int = 20
    max_chars: int = 4000


class QAConfig(dg.Config):
    n_free_form: int = 3
    n_mcq: int = 2
    max_tokens: int = 768
    temperature: float = 0.0
    seed: int = 0  # sampling's seed when temperature > 0: a rerun samples the same Q&A


def sampling(config: CaptionConfig | QAConfig) -> SamplingParams:
    """The requests' sampling; greedy requests carry no seed (it changes nothing, and their journal keys stay)."""
    return SamplingParams(max_tokens=config.max_tokens, temperature=config.temperature,
                          seed=config.seed if config.temperature > 0 else None)


def greedy_seed(config: type[CaptionConfig | QAConfig]) -> tuple[str, ...]:
    """("seed",) when the config's default decoding is greedy: the seed then changes nothing written, and leaves the
    code version as it was before the field existed."""
    return ("seed",) if config().temperature == 0 else ()


class DedupConfig(dg.Config):
    threshold: float = 0.9  # cosine similarity at or above which a question is a near duplicate


class ConversationsConfig(dg.Config):
    mixes: list[str] = list(MIXES)
    seed: int = 0


# GPU work is declared (names in viscon_dagster/gpu.py): the `gpu` pool bounds concurrent GPU steps; with the
# k8s executor each step's pod asks for one GPU; `viscon/accelerator` lets launchers route runs to GPU capacity.
GPU = GPU_ASSET_KWARGS


def _remaining(context: dg.AssetExecutionContext) -> int:
    """Partitions of this asset not materialized yet and not in this run (for the cost projection)."""
    pdef = context.assets_def.partitions_def
    all_keys = set(pdef.get_partition_keys(dynamic_partitions_store=context.instance))
    done = context.instance.get_materialized_partitions(context.asset_key)
    return len(all_keys - set(done) - set(context.partition_keys))


def _ask(context: dg.AssetExecutionContext, model: ModelBackend, requests: list, shard: str) -> tuple[list, dict]:
    """The model's answers, paid once: journaled next to the shard's output under a lease held for this
    run; returns them with the call's metadata (model, usage, failures, cost and its projection)."""
    storage: StorageResource = context.resources.storage
    journal = storage.path(*context.asset_key.path, "_journal", shard)
    responses = model.generate(requests, journal_dir=journal, lease_owner=context.run_id,
                               lease_checks=journal_checks(context.instance))
    metadata = {"backend": model.backend_name, **model.metadata(responses, remaining_partitions=_remaining(context))}
    return responses, metadata


def _text_fixes(table: pa.Table) -> dict[str, int]:
    """Rows whose model text cleaning repaired, and rows that held characters lost before it (core/chain/text.py)."""
    fixes = status_counts(table, "text_fix")
    return {"text_repaired": fixes.get("repaired", 0), "text_unrepairable": fixes.get("unrepairable", 0)}


def _caption_asset(spec: ChainSpec, labels: Mapping[str, str], name: str, contextual: bool, description: str):
    key = spec.key(name)
    prompt_version = (CAPTION if contextual else NONCONTEXTUAL).version
    version = code_version(name, prompt=prompt_version,
                           settings=config_defaults(CaptionConfig, *greedy_seed(CaptionConfig)),
                           models={"caption": labels.get(spec.caption_model_key), "tokenizer": labels.get("tokenizer")})

    @dg.asset(
        **spec.shard_asset(key, gpu=True, automated=contextual), kinds={"parquet"},
        deps=[spec.key("filtered_docs"), spec.key("images"), *spec.caption_deps],
        required_resource_keys={spec.caption_model_key, "storage", "tokenizer"}, check_specs=[captions_check_spec(key)],
        code_version=version, description=description, **GPU,
    )
    def _captions(context: dg.AssetExecutionContext, config: CaptionConfig) -> dg.MaterializeResult:
        model: ModelBackend = getattr(context.resources, spec.caption_model_key)
        storage: StorageResource = context.resources.storage
        tokenizer: TokenizerResource = context.resources.tokenizer
        count = lambda text: tokenizer.count_tokens([text])[0]  # noqa: E731
        params = sampling(config)
        options = storage.storage_options()

        def shard_captions(shard: str) -> ShardOutput:
            docs = read_input(storage, spec.key("filtered_docs"), shard)
            images = read_input(storage, spec.key("images"), shard)
            jobs = caption_jobs(docs, images, shard, contextual, config.context_tokens, count)
            requests = [caption_request(j, ImageRef(url=str(storage.path(j.image_path)), sha256=j.image_sha256,
                                                    storage_options=options, mime="image/jpeg"), params)
                        for j in jobs]
            responses, model_metadata = _ask(context, model, requests, shard)
            table = pa.Table.from_pylist(caption_rows(jobs, responses, contextual, config.min_chars,
                                                      config.max_chars), schema=CAPTIONS_SCHEMA)
            return ShardOutput(table, {
                **table_metadata(table, ["doc_id", "position", "status", "caption"]),
                "caption_model": model.model_id,
                "prompt_version": prompt_version, **_text_fixes(table),
                **as_metadata({"status_counts": status_counts(table)}), **model_metadata,
            }, [check_captions(table.to_pandas(), config.min_chars, config.max_chars, key)])

        return materialize_shards(context, storage, shard_captions)

    return _captions


def _qa_asset(spec: ChainSpec, labels: Mapping[str, str]):
    key = spec.key("qa_pairs")

    @dg.asset(
        **spec.shard_asset(key, gpu=True), kinds={"parquet"}, deps=[spec.key("captions")],
        required_resource_keys={spec.qa_model_key, "storage"}, check_specs=[qa_check_spec(key)],
        code_version=code_version("qa_pairs", prompt=QA.version,
                                  settings=config_defaults(QAConfig, *greedy_seed(QAConfig)),
                                  models={"qa": labels.get(spec.qa_model_key)}),
        description="Free-form and multiple-choice Q&A written from each caption's text; every item validated, "
                    "invalid ones kept with their reason; leakage = answerability from the caption.", **GPU,
    )
    def _qa_pairs(context: dg.AssetExecutionContext, config: QAConfig) -> dg.MaterializeResult:
        model: ModelBackend = getattr(context.resources, spec.qa_model_key)
        storage: StorageResource = context.resources.storage
        params = sampling(config)

        def shard_qa(shard: str) -> ShardOutput:
            captions = read_input(storage, spec.key("captions"), shard)
            usable = captions.filter(pa.compute.equal(captions["status"], "ok")).to_pylist()
            requests = [qa_request(c["caption"], config.n_free_form, config.n_mcq, params) for c in usable]
            responses, model_metadata = _ask(context, model, requests, shard)
            rows = [row for c, r in zip(usable, responses, strict=True) for row in qa_rows(c, r)]
            table = pa.Table.from_pylist(rows, schema=QA_SCHEMA)
            valid = table.filter(table["valid"])
            return ShardOutput(table, {
                **table_metadata(table, ["kind", "question", "answer", "valid", "reason"]),
                "qa_model": model.model_id, "prompt_version": QA.version, "valid_items": valid.num_rows,
                **_text_fixes(table),
                **as_metadata({
                    "invalid_by_reason": status_counts(table.filter(pa.compute.invert(table["valid"])), "reason"),
                    "leakage": leakage_summary(valid["leakage"].to_pylist())}),
                **model_metadata,
            }, [check_qa(table.to_pandas(), key)])

        return materialize_shards(context, storage, shard_qa)

    return _qa_pairs


UNIQUE_QA_SCHEMA = (QA_SCHEMA.append(pa.field("kept", pa.bool_())).append(pa.field("duplicate_of", pa.string()))
                    .append(pa.field("similarity", pa.float32())).append(pa.field("dup_scope", pa.string())))


def _dedup_asset(spec: ChainSpec, labels: Mapping[str, str]):
    @dg.asset(
        **spec.shard_asset(spec.key("unique_qa_pairs")), kinds={"parquet"}, deps=[spec.key("qa_pairs")],
        code_version=code_version("unique_qa_pairs", settings=config_defaults(DedupConfig),
                                  models={"embedder": labels.get("embedder")}),
        description="Valid Q&A with near-duplicate questions (cosine ≥ threshold, within an image and within the "
                    "shard) marked kept=false, with the kept question they repeat.",
    )
    def _unique_qa_pairs(context: dg.AssetExecutionContext, config: DedupConfig, embedder: EmbedderResource,
                         storage: StorageResource) -> dg.MaterializeResult:
        def shard_dedup(shard: str) -> ShardOutput:
            qa_pairs = read_input(storage, spec.key("qa_pairs"), shard)
            valid = qa_pairs.filter(qa_pairs["valid"]).sort_by([
                ("doc_id", "ascending"), ("position", "ascending"), ("kind", "ascending"), ("item_index", "ascending")])
            rows = valid.to_pylist()
            marked = mark_duplicates(rows, embedder.embed([r["question"] for r in rows]), config.threshold)
            table = pa.Table.from_pylist(marked, schema=UNIQUE_QA_SCHEMA)
            kept = [r for r in marked if r["kept"]]
            removed = [r for r in marked if not r["kept"]]
            return ShardOutput(table, {
                **table_metadata(table, ["kind", "question", "kept", "duplicate_of", "similarity"]),
                "embedding_model": model_label(embedder.model_id), "threshold": config.threshold,
                "kept": len(kept), "removed": len(removed),
                "removed/image": sum(r["dup_scope"] == "image" for r in removed),
                "removed/shard": sum(r["dup_scope"] == "shard" for r in removed),
                "leakage_of_kept": dg.MetadataValue.json(leakage_summary([r["leakage"] for r in kept])),
            })

        return materialize_shards(context, storage, shard_dedup)

    return _unique_qa_pairs


def _conversations_asset(spec: ChainSpec):
    key, control = spec.key("conversations"), spec.key("noncontextual_captions")

    @dg.asset(
        **spec.shard_asset(key, optional_deps=(control,)), kinds={"parquet"},
        deps=[spec.key("captions"), spec.key("unique_qa_pairs"), control],
        check_specs=[conversations_check_spec(key)],
        code_version=code_version("conversations", settings=config_defaults(ConversationsConfig)),
        description="LLaVA/ShareGPT4V conversation records for every mix (leaky by default in exports); the "
                    "noncontextual mix appears when noncontextual_captions was materialized for the shard.",
    )
    def _conversations(context: dg.AssetExecutionContext, config: ConversationsConfig,
                       storage: StorageResource) -> dg.MaterializeResult:
        def shard_conversations(shard: str) -> ShardOutput:
            captions = read_input(storage, spec.key("captions"), shard)
            unique_qa_pairs = read_input(storage, spec.key("unique_qa_pairs"), shard)
            control_path = storage.partition_path(control, shard)
            noncontextual = read_parquet(control_path) if control_path.exists() else None
            result = build_conversations(image_samples(captions, unique_qa_pairs, noncontextual), config.mixes,
                                         config.seed)
            table = result.table()
            return ShardOutput(table, {
                **table_metadata(table, ["id", "mix", "image", "conversations"]), **as_metadata(result.metadata()),
                "noncontextual_captions": noncontextual is not None,
            }, [check_conversations(table, key, config.mixes)])

        return materialize_shards(context, storage, shard_conversations)

    return _conversations


@dataclass(frozen=True)
class Chain:
    """What `build_chain` makes for one spec: its assets, its jobs and the selections they run."""
    spec: ChainSpec
    assets: list[dg.AssetsDefinition]
    shard_selection: dg.AssetSelection    # every per-shard asset but the control (materialized on request)
    release_selection: dg.AssetSelection
    jobs: list  # the shard job and the release job (unresolved asset jobs)

    @property
    def shard_job(self) -> str:
        return self.spec.name("shard_chain")

    @property
    def release_job(self) -> str:
        return self.spec.release_job


def build_chain(spec: ChainSpec, labels: Mapping[str, str] | None = None) -> Chain:
    """`labels`: resource key → the label of the model it serves (`caption_model`, `qa_model`, `tokenizer`,
    `embedder`), folded into the code versions so a different model marks its assets' partitions stale."""
    labels = labels or {}
    assets = [
        filtered_docs_asset(spec, labels),
        images_asset(spec, labels),
        _caption_asset(spec, labels, "captions", True,
                       "One contextual caption per kept image: the page text around it (placeholders, target "
                       "marked, alt text) and the image go to the caption model; every answer is a row with a status."),
        _caption_asset(spec, labels, "noncontextual_captions", False,
                       "The control: captions of the same images without the page context. Materialized on request."),
        _qa_asset(spec, labels),
        _dedup_asset(spec, labels),
        _conversations_asset(spec),
        release_asset(spec),
    ]
    own = dg.AssetSelection.assets(*(a.key for a in assets))  # not the group: the chain's ablation shares it
    release = dg.AssetSelection.assets(spec.release_key)
    shard = own - release - dg.AssetSelection.assets(spec.key("noncontextual_captions"))
    jobs = [
        dg.define_asset_job(spec.name("shard_chain"), selection=shard, partitions_def=spec.partitions_def,
                            tags=gpu_run_tags(), description=f"Every per-shard asset of {spec.group}, for one shard "
                            f"or a range; tagged for a GPU worker (its caption and Q&A steps)."),
        dg.define_asset_job(spec.release_job, selection=release,
                            description=f"Export every materialized shard of {spec.group} as {spec.release_name}."),
    ]
    return Chain(spec, assets, shard, release, jobs)
