"""The code location's shape: asset keys, checks, partitions, jobs, sensors, resources."""

import dagster as dg

from viscon_dagster.definitions import SHARD_JOB, build_definitions, defs


def test_asset_graph_is_exactly_what_we_ship():
    graph = defs.resolve_asset_graph()
    assert sorted(k.to_user_string() for k in graph.get_all_asset_keys()) == ["filtered_docs", "images"]
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys)
    assert checks == ["filtered_docs:filtered_docs_suite", "images:images_success_rate", "images:images_suite"]
    partitions = {k.to_user_string(): graph.get(k).partitions_def for k in graph.get_all_asset_keys()}
    assert {k: (type(p).__name__, p.name) for k, p in partitions.items()} == {
        "filtered_docs": ("DynamicPartitionsDefinition", "obelics_shards"),
        "images": ("DynamicPartitionsDefinition", "obelics_shards")}


def test_blocking_checks_and_jobs_sensors_resources():
    spec = next(iter(defs.resolve_assets_def("filtered_docs").check_specs))
    assert spec.blocking
    image_specs = {s.name: s.blocking for s in defs.resolve_assets_def("images").check_specs}
    assert image_specs == {"images_suite": True, "images_success_rate": False}
    assert defs.resolve_job_def(SHARD_JOB).partitions_def.name == "obelics_shards"
    assert [s.name for s in defs.sensors] == ["obelics_shard_sensor"]
    assert set(defs.resources) == {"storage", "io_manager", "tokenizer", "shard_source", "image_fetcher"}


def test_definitions_validate():
    dg.Definitions.validate_loadable(build_definitions(storage_root="s3://bucket/prefix"))
