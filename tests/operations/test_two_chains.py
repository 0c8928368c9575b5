"""Two chains built by the factory live in one code location: disjoint keys, checks, jobs and selections."""

import dagster as dg
import pytest

from viscon_dagster.assets.chain import build_chain
from viscon_dagster.assets.spec import ChainSpec
from viscon_dagster.definitions import build_definitions
from viscon_dagster.partitions import obelics_shards
from viscon_dagster.resources.shard_source import record_shards

STAGES = ["filtered_docs", "images", "captions", "noncontextual_captions", "qa_pairs", "unique_qa_pairs",
          "conversations"]
SECOND = dg.DynamicPartitionsDefinition(name="obelics_shards_second")


def two_chains():
    first = build_chain(ChainSpec(partitions_def=obelics_shards))
    second = build_chain(ChainSpec(partitions_def=SECOND, key_prefix=("viscon_1m",), group="viscon_1m",
                                   release_name="viscon_1m_release", caption_model_key="captioner_model",
                                   caption_deps=(dg.AssetDep("captioner_stand_in"),)))
    return first, second


def two_chain_definitions(**kwargs) -> dg.Definitions:
    base = build_definitions(**kwargs)
    first, second = two_chains()

    @dg.asset(group_name="captioner")
    def captioner_stand_in() -> None:
        """An upstream of the second chain's captions, as the trained captioner is."""

    return dg.Definitions(assets=[*first.assets, *second.assets, captioner_stand_in], jobs=[*first.jobs, *second.jobs],
                          resources={**base.resources, "captioner_model": base.resources["caption_model"]})


def test_two_chains_build_into_one_definitions_without_collisions():
    defs = two_chain_definitions()
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {*STAGES, "viscon_100k_release", *(f"viscon_1m/{s}" for s in STAGES), "viscon_1m_release",
                    "captioner_stand_in"}
    checks = sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys)
    assert len(checks) == 14 and len(set(checks)) == 14
    assert [c for c in checks if c.startswith("viscon_1m/")] == [
        "viscon_1m/captions:captions_suite", "viscon_1m/conversations:conversations_suite",
        "viscon_1m/filtered_docs:filtered_docs_suite", "viscon_1m/images:images_success_rate",
        "viscon_1m/images:images_suite", "viscon_1m/noncontextual_captions:captions_suite",
        "viscon_1m/qa_pairs:qa_pairs_suite"]
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in graph.get(k).parent_keys)
               for k in graph.get_all_asset_keys()}
    assert parents["viscon_1m/images"] == ["viscon_1m/filtered_docs"]
    assert parents["viscon_1m/captions"] == ["captioner_stand_in", "viscon_1m/filtered_docs", "viscon_1m/images"]
    assert parents["captions"] == ["filtered_docs", "images"]
    assert parents["viscon_1m_release"] == ["viscon_1m/conversations", "viscon_1m/unique_qa_pairs"]
    partitions = {k.to_user_string(): graph.get(k).partitions_def for k in graph.get_all_asset_keys()}
    assert {partitions[f"viscon_1m/{s}"].name for s in STAGES} == {"obelics_shards_second"}
    assert {partitions[s].name for s in STAGES} == {"obelics_shards"}
    assert defs.resolve_assets_def(dg.AssetKey(["viscon_1m", "captions"])).required_resource_keys >= {"captioner_model"}


def test_each_chains_jobs_select_only_its_own_assets():
    defs = two_chain_definitions()
    first, second = two_chains()
    assert [j.name for j in defs.jobs] == ["shard_chain", "release", "viscon_1m_shard_chain", "viscon_1m_release_job"]
    assert (first.shard_job, first.release_job) == ("shard_chain", "release")
    graph = defs.resolve_asset_graph()

    def selected(selection):
        return sorted(k.to_user_string() for k in selection.resolve(graph))

    assert selected(first.shard_selection) == sorted(s for s in STAGES if s != "noncontextual_captions")
    assert selected(second.shard_selection) == sorted(f"viscon_1m/{s}" for s in STAGES if s != "noncontextual_captions")
    assert selected(first.release_selection) == ["viscon_100k_release"]
    assert selected(second.release_selection) == ["viscon_1m_release"]
    job = defs.resolve_job_def("viscon_1m_shard_chain")
    assert job.partitions_def.name == "obelics_shards_second"
    assert job.tags["viscon/accelerator"] == "gpu"  # a run tag, where launchers read it


@pytest.mark.slow
def test_the_second_chain_writes_under_its_own_prefix(tmp_path, sample_dir, tokenizer_dir):
    defs = two_chain_definitions(storage_root=(tmp_path / "store").as_uri(), tokenizer=str(tokenizer_dir))
    key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SECOND.name, [key])
        result = dg.materialize(list(defs.assets), selection=["viscon_1m/filtered_docs"], resources=defs.resources,
                                partition_key=key, instance=instance)
        assert result.success
        assert {c.asset_key.to_user_string(): c.passed for c in result.get_asset_check_evaluations()} == {
            "viscon_1m/filtered_docs": True}
        assert instance.get_materialized_partitions(dg.AssetKey(["viscon_1m", "filtered_docs"])) == {key}
        assert not instance.get_materialized_partitions(dg.AssetKey("filtered_docs"))
    store = tmp_path / "store"
    assert (store / "viscon_1m" / "filtered_docs" / f"{key}.parquet").exists()
    assert (store / "viscon_1m" / "filtered_docs_rejects" / f"{key}.parquet").exists()
    assert not (store / "filtered_docs").exists()
