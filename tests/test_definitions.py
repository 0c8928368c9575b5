"""The code location's shape: asset keys, checks, partitions, jobs, sensors, resources."""

import json

import dagster as dg
import pytest

from viscon_dagster.definitions import SHARD_JOB, build_definitions, defs

PER_SHARD = ["captions", "conversations", "filtered_docs", "images", "noncontextual_captions", "qa_pairs",
             "unique_qa_pairs"]
PER_SHARD_1M = [f"viscon_1m/{k}" for k in PER_SHARD]  # VisCon-1M: the same chain, prefixed, on its own shards
CAPTIONER = ["captioner_evaluation", "captioner_training_pairs", "contextual_captioner"]
# each chain's ablation (assets/ablation.py; its lineage: tests/ablation/test_ablation_definitions.py)
ABLATION = ["ablation_report", "benchmark_items", "decontaminated_mixes", "mix_benchmark", "mix_finetune"]
ABLATION_ALL = ABLATION + [f"viscon_1m/{k}" for k in ABLATION]


def test_asset_graph_is_exactly_what_we_ship():
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted(
        PER_SHARD + ["viscon_100k_release"] + PER_SHARD_1M + ["viscon_1m_release"] + CAPTIONER + ABLATION_ALL)
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys)
    chain_checks = ["captions:captions_suite", "conversations:conversations_suite",
                    "filtered_docs:filtered_docs_suite", "images:images_success_rate", "images:images_suite",
                    "noncontextual_captions:captions_suite", "qa_pairs:qa_pairs_suite"]
    assert checks == sorted(chain_checks + [f"viscon_1m/{c}" for c in chain_checks] + [
        "captioner_evaluation:gain_reaches_paper", "captioner_evaluation:tuned_beats_base",
        "captioner_training_pairs:split_is_disjoint"] + [
        f"{p}{c}" for p in ("", "viscon_1m/") for c in ("ablation_report:leaky_beats_base",
                                                         "decontaminated_mixes:no_benchmark_item_in_training")])
    partitions = {k.to_user_string(): graph.get(k).partitions_def for k in graph.get_all_asset_keys()}
    assert {k: (type(p).__name__, getattr(p, "name", None)) if p else None for k, p in partitions.items()} == {
        **{k: ("DynamicPartitionsDefinition", "obelics_shards") for k in PER_SHARD}, "viscon_100k_release": None,
        **{k: ("DynamicPartitionsDefinition", "obelics_shards_1m") for k in PER_SHARD_1M}, "viscon_1m_release": None,
        "captioner_training_pairs": None, "contextual_captioner": ("StaticPartitionsDefinition", None),
        "captioner_evaluation": ("StaticPartitionsDefinition", None),
        **{f"{p}{k}": ("StaticPartitionsDefinition", None) if k.startswith("mix_") else None
           for p in ("", "viscon_1m/") for k in ABLATION}}


def test_lineage_edges():
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys() if k.to_user_string() in PER_SHARD + ["viscon_100k_release"]}
    assert parents == {
        "filtered_docs": [], "images": ["filtered_docs"], "captions": ["filtered_docs", "images"],
        "noncontextual_captions": ["filtered_docs", "images"], "qa_pairs": ["captions"],
        "unique_qa_pairs": ["qa_pairs"], "conversations": ["captions", "noncontextual_captions", "unique_qa_pairs"],
        "viscon_100k_release": ["conversations", "unique_qa_pairs"]}
    one_m = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
             for k in graph.get_all_asset_keys() if k.path[0] in ("viscon_1m", "viscon_1m_release")
             and k.path[-1] not in ABLATION}
    captioner = ["captioner_evaluation", "contextual_captioner"]  # a new checkpoint marks the 1M captions stale
    assert one_m == {
        "viscon_1m/filtered_docs": [], "viscon_1m/images": ["viscon_1m/filtered_docs"],
        "viscon_1m/captions": [*captioner, "viscon_1m/filtered_docs", "viscon_1m/images"],
        "viscon_1m/noncontextual_captions": [*captioner, "viscon_1m/filtered_docs", "viscon_1m/images"],
        "viscon_1m/qa_pairs": ["viscon_1m/captions"], "viscon_1m/unique_qa_pairs": ["viscon_1m/qa_pairs"],
        "viscon_1m/conversations": ["viscon_1m/captions", "viscon_1m/noncontextual_captions",
                                    "viscon_1m/unique_qa_pairs"],
        "viscon_1m_release": ["viscon_1m/conversations", "viscon_1m/unique_qa_pairs"]}
    # the 1M captions read the configured recipe's checkpoint and evaluation, whatever their shard
    key = dg.AssetKey(["viscon_1m", "captions"])
    deps = {d.asset_key.to_user_string(): d.partition_mapping
            for d in defs.resolve_assets_def(key).specs_by_key[key].deps}
    assert deps["contextual_captioner"] == deps["captioner_evaluation"] == \
        dg.SpecificPartitionsPartitionMapping(["tiny-demo"])


def test_blocking_checks_gpu_pools_jobs_sensors_resources():
    blocking = {s.key.name: s.blocking for a in defs.assets for s in a.check_specs}
    assert blocking == {"filtered_docs_suite": True, "images_suite": True, "images_success_rate": False,
                        "captions_suite": True, "qa_pairs_suite": True, "conversations_suite": True,
                        "split_is_disjoint": True, "tuned_beats_base": True, "gain_reaches_paper": False,
                        "no_benchmark_item_in_training": True, "leaky_beats_base": False}
    gpu = sorted(k.to_user_string() for a in defs.assets for k in a.keys if a.op.pool == "gpu")
    chain_gpu = ["captions", "noncontextual_captions", "qa_pairs"]
    chain_gpu += ["mix_finetune", "mix_benchmark"]
    assert gpu == sorted(chain_gpu + [f"viscon_1m/{k}" for k in chain_gpu] + ["captioner_evaluation",
                                                                              "contextual_captioner"])
    for k in map(dg.AssetKey.from_user_string, gpu):
        a = defs.resolve_assets_def(k)
        assert a.tags_by_key[k]["viscon/accelerator"] == "gpu"
        limits = json.loads(a.op.tags["dagster-k8s/config"])["container_config"]["resources"]["limits"]
        assert limits == {"nvidia.com/gpu": "1"}
    shard_job = defs.resolve_job_def(SHARD_JOB)
    assert shard_job.partitions_def.name == "obelics_shards"
    assert "noncontextual_captions" not in {n.name for n in shard_job.graph.node_defs}
    one_m_job = defs.resolve_job_def("viscon_1m_shard_chain")
    assert one_m_job.partitions_def.name == "obelics_shards_1m"
    assert {n.name for n in one_m_job.graph.node_defs} == {
        f"viscon_1m__{k}" for k in PER_SHARD if k != "noncontextual_captions"}
    assert [j.name for j in defs.jobs] == ["shard_chain", "release", "viscon_1m_shard_chain", "viscon_1m_release_job",
                                           "ablation_mixes", "viscon_1m_ablation_mixes"]
    assert [s.name for s in defs.sensors] == ["obelics_shard_sensor", "viscon_cpu_automation", "viscon_gpu_automation",
                                              "viscon_dead_runs"]
    # switched on in the UI, but for the one that only cleans up (fails dead runs: viscon_dagster/dead_runs.py)
    assert {s.name for s in defs.sensors if s.default_status == dg.DefaultSensorStatus.RUNNING} == {"viscon_dead_runs"}
    assert set(defs.resources) == {"storage", "io_manager", "tokenizer", "shard_source", "image_fetcher",
                                   "caption_model", "qa_model", "judge_model", "embedder", "hub", "captioner_model",
                                   "pipes_subprocess_client"}


def test_definitions_validate():
    dg.Definitions.validate_loadable(build_definitions(storage_root="s3://bucket/prefix"))


@pytest.mark.slow
def test_dagster_cli_validates_the_workspace():
    """What `dagster dev` loads: the code location named in workspace.yaml."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([str(Path(sys.executable).with_name("dagster")), "definitions", "validate", "-w",
                          str(repo / "workspace.yaml")], cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Validation successful" in out.stderr + out.stdout


@pytest.mark.parametrize("kind,executor", [("", None), ("multiprocess", None),
                                           ("in_process", dg.in_process_executor)])
def test_the_executor_comes_from_the_environment(monkeypatch, kind, executor):
    from viscon_dagster.environment import executor_from_env

    monkeypatch.setenv("VISCON_EXECUTOR", kind)
    assert executor_from_env() is executor


def test_an_unknown_executor_is_refused_naming_the_choices(monkeypatch):
    from viscon_dagster.environment import executor_from_env
    from viscon_dagster.settings import SettingError

    monkeypatch.setenv("VISCON_EXECUTOR", "threads")
    with pytest.raises(SettingError, match="use one of multiprocess, in_process, k8s"):
        executor_from_env()


def test_the_default_executor_takes_in_process_and_multiprocess_run_config():
    job = defs.resolve_job_def("shard_chain")
    for execution in ({"in_process": {}}, {"multiprocess": {"max_concurrent": 2}}):  # the demo's, and the default
        assert dg.validate_run_config(job, {"execution": {"config": execution}}), execution
