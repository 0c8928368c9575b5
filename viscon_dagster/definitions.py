"""The one place where assets, checks, resources, jobs and sensors meet.

Environments choose resources (storage root, S3 endpoint, tokenizer) through environment
variables or `build_definitions(...)`; asset code never does.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from viscon_dagster.assets.ablation import ablation_assets
from viscon_dagster.assets.captioner import CAPTIONER, EVALUATION, training_assets
from viscon_dagster.assets.captioner_evaluation import build_evaluation_asset
from viscon_dagster.assets.chain import Chain, build_chain
from viscon_dagster.assets.spec import ChainSpec, teacher_chain
from viscon_dagster.automation import automation_sensors, obelics_shard_sensor, viscon_dead_runs
from viscon_dagster.core.models.labels import model_label
from viscon_dagster.dead_runs import with_run_lease
from viscon_dagster.environment import (
    backend_options,
    env_secret,
    executor_from_env,
    image_fetcher,
    model_backend,
    s3_resource,
)
from viscon_dagster.partitions import obelics_shards_1m
from viscon_dagster.resources.captioner_backend import CaptionerBackend, captioner_recipe, version_label
from viscon_dagster.resources.embedder import EmbedderResource
from viscon_dagster.resources.hub import HubResource
from viscon_dagster.resources.image_fetcher import ImageFetcherResource
from viscon_dagster.resources.io_manager import ParquetIOManager
from viscon_dagster.resources.models import ModelBackend
from viscon_dagster.resources.pipes import pipes_subprocess_client
from viscon_dagster.resources.shard_source import ShardSourceResource
from viscon_dagster.resources.storage import StorageResource
from viscon_dagster.resources.tokenizer import TokenizerResource

SHARD_JOB = "shard_chain"
RELEASE_JOB = "release"


def viscon_1m_spec(recipe: str) -> ChainSpec:
    """VisCon-1M: the same chain on its own shards, captioned by the trained captioner of `recipe`. Its captions
    depend on that recipe's checkpoint and evaluation, so a new checkpoint marks them stale."""
    upstream = dg.SpecificPartitionsPartitionMapping([recipe])
    return ChainSpec(partitions_def=obelics_shards_1m, key_prefix=("viscon_1m",), group="viscon_1m",
                     release_name="viscon_1m_release", caption_model_key="captioner_model",
                     caption_deps=(dg.AssetDep(CAPTIONER, partition_mapping=upstream),
                                   dg.AssetDep(EVALUATION, partition_mapping=upstream)))


def chains(labels: dict[str, str] | None = None, recipe: str | None = None) -> list[Chain]:
    """Every chain this code location serves (a second one is one more `build_chain(ChainSpec(...), labels)`)."""
    return [build_chain(teacher_chain(), labels),
            build_chain(viscon_1m_spec(recipe or captioner_recipe()), labels)]


def captioner_backend(storage: StorageResource, recipe: str) -> ModelBackend:
    """VisCon-1M's caption model: the trained captioner (transformers) unless VISCON_CAPTIONER_BACKEND names
    another backend for its published folder or server (vllm, openai: resources/captioner_backend.py)."""
    if os.environ.get("VISCON_CAPTIONER_BACKEND", "transformers") == "transformers" \
            and not os.environ.get("VISCON_CAPTIONER_MODEL"):
        return CaptionerBackend(recipe=recipe, storage=storage, **backend_options("captioner", CaptionerBackend))
    return model_backend("captioner")


def chain_for_set(shard_set: str) -> Chain:
    """The chain whose shard partitions are the named set (`100k`, `1m`: core/shards/registry.SHARD_SETS)."""
    from viscon_dagster.core.shards.registry import SHARD_SETS, check_set

    name = SHARD_SETS[check_set(shard_set)]
    found = [c for c in chains() if c.spec.partitions_def.name == name]
    if not found:
        raise ValueError(f"no chain runs on the {shard_set} shard set ({name}) in this code location yet")
    return found[0]


def model_labels(resources: dict) -> dict[str, str]:
    """Resource key → the label of its model (the image fetcher: its output-shaping settings), for the assets'
    code versions (assets/chain.py)."""
    labels = {k: r.model_id for k, r in resources.items() if isinstance(r, ModelBackend)}
    return {**labels, "tokenizer": resources["tokenizer"].label,
            "embedder": model_label(resources["embedder"].model_id),
            "image_fetcher": resources["image_fetcher"].output_label()}


def build_definitions(storage_root: str | None = None, s3: S3Resource | None = None,
                      tokenizer: str | None = None, fetcher: ImageFetcherResource | None = None,
                      caption_model: ModelBackend | None = None, qa_model: ModelBackend | None = None,
                      captioner_model: ModelBackend | None = None,
                      judge_model: ModelBackend | None = None) -> dg.Definitions:
    storage = StorageResource(root=storage_root, s3=s3 or s3_resource())
    resources = {
        "storage": storage,
        "io_manager": ParquetIOManager(storage=storage),
        "tokenizer": TokenizerResource(name_or_path=tokenizer),
        "image_fetcher": fetcher or image_fetcher(),
        "caption_model": caption_model or model_backend("caption"),
        "qa_model": qa_model or model_backend("qa"),
        "judge_model": judge_model or model_backend("judge"),  # the captioner evaluation's judge
        "embedder": EmbedderResource(),
        "hub": HubResource(token=env_secret("HF_TOKEN")),
        "shard_source": ShardSourceResource(),
        "pipes_subprocess_client": pipes_subprocess_client(),  # the captioner's and the ablation's training
    }
    recipe = captioner_recipe()
    captioner = captioner_model or captioner_backend(storage, recipe)
    built = chains({**model_labels(resources), "captioner_model": version_label(captioner)}, recipe)
    resources["captioner_model"] = captioner  # after model_labels: its label is read from storage at run time
    ablations = [ablation_assets(c.spec) for c in built]  # each chain's ablation: mixes → target model → benchmark
    return dg.Definitions(
        assets=[a for c in built for a in c.assets] + [a for x in ablations for a in x.assets]
        + [*training_assets, build_evaluation_asset(resources["judge_model"].model_id)],
        jobs=[j for c in built for j in c.jobs] + [j for x in ablations for j in x.jobs],
        sensors=[obelics_shard_sensor, *automation_sensors([c.spec.group for c in built]), viscon_dead_runs],
        resources=resources,
        # VISCON_EXECUTOR=k8s: a pod per step (deploy/helm); a run's process holds a lease on it (dead_runs.py)
        executor=with_run_lease(executor_from_env()),
    )


defs = build_definitions()
