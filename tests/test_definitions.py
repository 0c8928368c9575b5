"""The code location's shape: asset keys, checks, partitions, jobs, sensors, resources."""

import json

import dagster as dg

from viscon_dagster.definitions import SHARD_JOB, build_definitions, defs

PER_SHARD = ["captions", "conversations", "filtered_docs", "images", "noncontextual_captions", "qa_pairs",
             "unique_qa_pairs"]


def test_asset_graph_is_exactly_what_we_ship():
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == sorted(PER_SHARD + ["viscon_100k_release"])
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys)
    assert checks == ["captions:captions_suite", "conversations:conversations_suite",
                      "filtered_docs:filtered_docs_suite", "images:images_success_rate", "images:images_suite",
                      "noncontextual_captions:captions_suite", "qa_pairs:qa_pairs_suite"]
    partitions = {k.to_user_string(): graph.get(k).partitions_def for k in graph.get_all_asset_keys()}
    assert {k: (type(p).__name__, p.name) if p else None for k, p in partitions.items()} == {
        **{k: ("DynamicPartitionsDefinition", "obelics_shards") for k in PER_SHARD}, "viscon_100k_release": None}


def test_lineage_edges():
    graph = defs.resolve_asset_graph()
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys()}
    assert parents == {
        "filtered_docs": [], "images": ["filtered_docs"], "captions": ["filtered_docs", "images"],
        "noncontextual_captions": ["filtered_docs", "images"], "qa_pairs": ["captions"],
        "unique_qa_pairs": ["qa_pairs"], "conversations": ["captions", "noncontextual_captions", "unique_qa_pairs"],
        "viscon_100k_release": ["conversations", "unique_qa_pairs"]}


def test_blocking_checks_gpu_pools_jobs_sensors_resources():
    blocking = {s.key.name: s.blocking for a in defs.assets for s in a.check_specs}
    assert blocking == {"filtered_docs_suite": True, "images_suite": True, "images_success_rate": False,
                        "captions_suite": True, "qa_pairs_suite": True, "conversations_suite": True}
    gpu = sorted(k.to_user_string() for a in defs.assets for k in a.keys if a.op.pool == "gpu")
    assert gpu == ["captions", "noncontextual_captions", "qa_pairs"]
    for k in gpu:
        a = defs.resolve_assets_def(k)
        assert a.tags_by_key[dg.AssetKey(k)]["viscon/accelerator"] == "gpu"
        limits = json.loads(a.op.tags["dagster-k8s/config"])["container_config"]["resources"]["limits"]
        assert limits == {"nvidia.com/gpu": "1"}
    shard_job = defs.resolve_job_def(SHARD_JOB)
    assert shard_job.partitions_def.name == "obelics_shards"
    assert "noncontextual_captions" not in {n.name for n in shard_job.graph.node_defs}
    assert [s.name for s in defs.sensors] == ["obelics_shard_sensor", "viscon_cpu_automation", "viscon_gpu_automation"]
    assert all(s.default_status == dg.DefaultSensorStatus.STOPPED for s in defs.sensors)  # switched on in the UI
    assert set(defs.resources) == {"storage", "io_manager", "tokenizer", "shard_source", "image_fetcher",
                                   "caption_model", "qa_model", "embedder", "hub"}


def test_definitions_validate():
    dg.Definitions.validate_loadable(build_definitions(storage_root="s3://bucket/prefix"))


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
