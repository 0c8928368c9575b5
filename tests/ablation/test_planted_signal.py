"""The ablation end to end in Dagster on a planted signal: the benchmark asks each image's dominant colour; the
`leaky` mix teaches it, `captions` teaches nothing (random letters). The tiny model is fine-tuned on both (through
Dagster Pipes, real TRL) and the report must rank leaky first with McNemar p < 0.05 — and, with the signal taken out
of the leaky mix, must find no significant difference (so the test can fail)."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow.parquet as pq
import pytest

from tests.ablation.planted import BENCH_QUESTION, register_chain, write_benchmark, write_chain
from viscon_dagster.definitions import build_definitions

MIXES = ["leaky", "captions", "none"]


def run_ablation(tmp_path, *, teach: bool, plant: bool, tokenizer_dir) -> dict:
    store, bench = tmp_path / "store", tmp_path / "seed-bench"
    images = write_benchmark(bench)
    write_chain(store, teach=teach, planted_image=images[5] if plant else None)
    defs = build_definitions(storage_root=store.as_uri(), tokenizer=str(tokenizer_dir))
    out: dict = {}
    with dg.instance_for_test() as instance:
        register_chain(instance)
        run = dg.materialize(list(defs.assets), selection=["benchmark_items", "decontaminated_mixes"],
                             instance=instance, resources=defs.resources, run_config={"ops": {
                                 "benchmark_items": {"config": {"source": str(bench), "test_fraction": 0.0}},
                                 "decontaminated_mixes": {"config": {"mixes": ["leaky", "captions"]}}}})
        assert run.success
        out["checks"] = {c.check_name: c.passed for c in run.get_asset_check_evaluations()}
        out["decontaminated"] = instance.get_latest_materialization_event(
            dg.AssetKey("decontaminated_mixes")).asset_materialization.metadata
        for mix in MIXES:
            trained = dg.materialize(list(defs.assets), selection=["mix_finetune", "mix_benchmark"], instance=instance,
                                     resources=defs.resources, partition_key=mix, raise_on_error=False)
            assert trained.success, mix
            out.setdefault("finetune", {})[mix] = next(
                e.materialization.metadata for e in trained.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey("mix_finetune"))
        report_run = dg.materialize(list(defs.assets), selection=["ablation_report"], instance=instance,
                                    resources=defs.resources)
        out["report_checks"] = {c.check_name: c for c in report_run.get_asset_check_evaluations()}
    out["report"] = json.loads((store / "ablation_report" / "report.json").read_text())
    out["store"] = store
    return out


@pytest.mark.slow
def test_the_report_finds_the_planted_signal(tmp_path, tiny_student, tokenizer_dir):
    out = run_ablation(tmp_path, teach=True, plant=True, tokenizer_dir=tokenizer_dir)
    # decontamination dropped the planted benchmark image (its sample's record in both mixes) and, on another
    # sample, the planted benchmark question (captions)
    dropped = out["decontaminated"]["dropped_by_mix"].value
    assert dropped == {"leaky": {"same_image": 1}, "captions": {"same_image": 1, "same_question": 1}}
    assert out["decontaminated"]["kept"].value == {"leaky": 199, "captions": 198}
    assert out["checks"] == {"no_benchmark_item_in_training": True}
    drops = pq.read_table(out["store"] / "decontaminated_mixes" / "dropped.parquet").to_pylist()
    assert sorted((d["mix"], d["reason"], d["benchmark_item"]) for d in drops) == [
        ("captions", "same_image", "seed:5"), ("captions", "same_question", "seed:0"),
        ("leaky", "same_image", "seed:5")]
    leaky = pq.read_table(out["store"] / "decontaminated_mixes" / "leaky.parquet")
    assert BENCH_QUESTION not in str(leaky.column("conversations").to_pylist())
    report = out["report"]
    assert report["items"] == 48 and report["ranking"][0] == "leaky"
    vs = {(c["a"], c["b"]): c for c in report["comparisons"]}
    assert vs[("leaky", "captions")]["p_holm"] < 0.05 and vs[("leaky", "captions")]["difference"] > 0.25
    assert report["gate"]["recommended"] is True and out["report_checks"]["leaky_beats_base"].passed
    assert report["mixes"]["leaky"]["gpu_hours"] == 0.0  # a CPU run states zero GPU hours …
    leaky_run = out["finetune"]["leaky"]
    assert leaky_run["device"].value == "cpu" and leaky_run["steps"].value == 40  # … and says why
    assert leaky_run["budget"].value == "steps" and leaky_run["train_records"].value == 199
    assert out["finetune"]["none"]["trained"].value is False
    assert (out["store"] / "ablation_report" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_without_the_signal_the_difference_is_not_significant(tmp_path, tiny_student, tokenizer_dir):
    out = run_ablation(tmp_path, teach=False, plant=False, tokenizer_dir=tokenizer_dir)
    report = out["report"]
    vs = {(c["a"], c["b"]): c for c in report["comparisons"]}
    assert vs[("leaky", "captions")]["p_holm"] >= 0.05 and not vs[("leaky", "captions")]["significant"]
    assert abs(vs[("leaky", "captions")]["difference"]) < 0.25
    # (the untouched base may still lose to both: a random model's letter preferences can miss every answer)
    check = out["report_checks"]["leaky_beats_base"]
    assert check.passed == report["gate"]["leaky_beats_base"] and check.severity == dg.AssetCheckSeverity.ERROR


@pytest.mark.slow
def test_the_blocking_check_fails_when_a_benchmark_item_still_matches(tmp_path, tokenizer_dir):
    """Matching turned down (exact bytes only, no question match): a re-encoded copy of a benchmark image and the
    benchmark's own question stay in the mixes, and the blocking check, which reads the published mixes back with
    the strict defaults, fails."""
    import io

    from PIL import Image

    store, bench = tmp_path / "store", tmp_path / "seed-bench"
    images = write_benchmark(bench)
    copy = io.BytesIO()
    Image.open(io.BytesIO(images[5])).resize((60, 60)).save(copy, "JPEG", quality=70)
    write_chain(store, teach=True, per_shard=8, planted_image=copy.getvalue())
    defs = build_definitions(storage_root=store.as_uri(), tokenizer=str(tokenizer_dir))
    with dg.instance_for_test() as instance:
        register_chain(instance)
        run = dg.materialize(list(defs.assets), selection=["benchmark_items", "decontaminated_mixes"],
                             instance=instance, resources=defs.resources, raise_on_error=False, run_config={"ops": {
                                 "benchmark_items": {"config": {"source": str(bench), "test_fraction": 0.0}},
                                 "decontaminated_mixes": {"config": {"mixes": ["leaky", "captions"],
                                                                     "max_distance": -1,
                                                                     "match_questions": False}}}})
        (check,) = run.get_asset_check_evaluations()
    assert not run.success  # blocking: the run fails, nothing downstream would start
    assert check.check_name == "no_benchmark_item_in_training" and not check.passed
    assert check.metadata["still_matching"].value == 3  # the copy in both mixes, the question in captions
    assert any("near_image of seed:5" in e for e in check.metadata["examples"].value)
    assert any("same_question of seed:0" in e for e in check.metadata["examples"].value)


@pytest.mark.slow
def test_the_tokens_budget(tmp_path, tiny_student, tokenizer_dir):
    """budget=tokens: one pass over the mix's records, cycled, until the text tokens reach the budget."""
    store, bench = tmp_path / "store", tmp_path / "seed-bench"
    write_benchmark(bench, n=8)
    write_chain(store, teach=True, per_shard=4)
    defs = build_definitions(storage_root=store.as_uri(), tokenizer=str(tokenizer_dir))
    with dg.instance_for_test() as instance:
        register_chain(instance)
        assert dg.materialize(list(defs.assets), selection=["benchmark_items", "decontaminated_mixes"],
                              instance=instance, resources=defs.resources, run_config={"ops": {
                                  "benchmark_items": {"config": {"source": str(bench), "test_fraction": 0.0}},
                                  "decontaminated_mixes": {"config": {"mixes": ["leaky"]}}}}).success
        run = dg.materialize(list(defs.assets), selection=["mix_finetune"], instance=instance, resources=defs.resources,
                             partition_key="leaky", run_config={"ops": {"mix_finetune": {"config": {
                                 "budget": "tokens", "budget_tokens": 1000}}}})
        (event,) = [e for e in run.get_asset_materialization_events()]
    meta = event.materialization.metadata
    assert meta["budget"].value == "tokens" and meta["tokens"].value >= 1000
    assert meta["unique_records"].value == 8 and meta["train_records"].value > 8  # the 8 records, cycled
    # one pass over the records taken: ceil(records / batch of 8) optimiser steps
    assert meta["steps"].value == -(-meta["train_records"].value // 8)
