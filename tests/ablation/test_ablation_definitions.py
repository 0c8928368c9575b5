"""The ablation in the code location: its lineage, for both chains, by one factory."""

from __future__ import annotations

import dagster as dg

from viscon_dagster.definitions import defs


def _parents(graph, key: str) -> list[str]:
    return sorted(p.to_user_string() for p in graph.get(dg.AssetKey.from_user_string(key)).parent_keys)


def test_each_chain_has_its_ablation():
    graph = defs.resolve_asset_graph()
    for prefix in ("", "viscon_1m/"):
        assert _parents(graph, f"{prefix}benchmark_items") == [f"{prefix}captions", f"{prefix}unique_qa_pairs"]
        assert _parents(graph, f"{prefix}decontaminated_mixes") == [f"{prefix}benchmark_items",
                                                                    f"{prefix}conversations"]
        assert _parents(graph, f"{prefix}mix_finetune") == [f"{prefix}decontaminated_mixes"]
        assert _parents(graph, f"{prefix}mix_benchmark") == [f"{prefix}benchmark_items", f"{prefix}mix_finetune"]
        assert _parents(graph, f"{prefix}ablation_report") == [f"{prefix}mix_benchmark"]
        group = "viscon_1m" if prefix else "viscon_100k"
        for name in ("benchmark_items", "mix_finetune", "ablation_report"):
            assert graph.get(dg.AssetKey.from_user_string(prefix + name)).group_name == group
    mixes = graph.get(dg.AssetKey("mix_finetune")).partitions_def.get_partition_keys()
    assert mixes == ["leaky", "captions", "free_form", "mcq", "qa", "separate", "noncontextual", "none"]


def test_the_mixes_job_runs_finetune_and_benchmark_with_gpu_tags():
    job = defs.resolve_job_def("ablation_mixes")
    assert {n.name for n in job.graph.node_defs} == {"mix_finetune", "mix_benchmark"}
    assert job.tags["viscon/accelerator"] == "gpu"
    assert defs.resolve_job_def("viscon_1m_ablation_mixes").partitions_def.get_partition_keys()[-1] == "none"
