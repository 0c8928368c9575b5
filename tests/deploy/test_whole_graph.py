"""The whole graph, deployed on one machine (tests/deploy/stack.py: PostgreSQL, an S3 server, a gRPC code server and
`dagster-daemon` with deploy/dagster.yaml's queue and run monitoring, each run a process of its own in its own
folder and HOME). The teacher and the Q&A model are the OpenAI-protocol double of tests/chain/scripted_openai.py
(no model service can be reached here); the captioner is the tiny student, trained for real.

What runs is what a deployment runs: automation sensors switched on through GraphQL, shards registered with
`viscon shards register`, the CPU and GPU stages backfilled by the sensors (the GPU window open), the captioner's
pairs, training (TRL through Dagster Pipes) and evaluation as a backfill submitted the way the UI submits it,
VisCon-1M captioned by the trained checkpoint, both releases on their cron. Then: every asset and check of every
partition in the Postgres event log; both releases load from S3 with `datasets.load_dataset`; no path of this
machine in any metadata, event or stored file; the compute logs are in S3; with nothing changed, a stale backfill
finds nothing to do and the sensors launch no GPU step.

Run it alone (it prints each phase's time with -s):
    .venv/bin/pytest -s -p no:cacheprovider tests/deploy/test_whole_graph.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.chain.scripted_openai import ScriptedOpenAI
from tests.chain1m.release_files import files_with_paths
from tests.deploy.stack import BIN, LOCATION, LOGS_PREFIX, REPO, graphql, running_stack
from tests.operations import harness
from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample
from viscon_dagster.local.backfills import LAUNCH

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

RECIPE = "tiny-demo"
CHAIN = ["filtered_docs", "images", "captions", "qa_pairs", "unique_qa_pairs", "conversations"]
GPU_STAGES = {"captions", "qa_pairs"}
CAPTIONER = ["captioner_training_pairs", "contextual_captioner", "captioner_evaluation"]
PHASE_S = 900  # a bound per phase on a loaded 2-core machine, not a measurement
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
# the captioner: a short training, an evaluation without judge or CLIP and a gate that asks nothing of the tiny
# student (the gate's policy is tested in tests/captioner; here the checkpoint only has to be published and used)
CAPTIONER_OPS = {
    "captioner_training_pairs": {"config": {"test_fraction": 0.3}},
    "contextual_captioner": {"config": {"max_steps": 4}},
    "captioner_evaluation": {"config": {"resamples": 50, "judge": False, "gate_gains": [], "gate_judge": False,
                                        "gate_faithfulness_margin": None, "gate_significance": False}},
}


def key(chain_prefix: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([*([chain_prefix] if chain_prefix else []), name])


def wait_for(what: str, probe, log: Path, timeout_s: float = PHASE_S, every_s: float = 2.0):
    """harness.wait_for, and the daemon's log when it gives up."""
    try:
        return harness.wait_for(what, probe, timeout_s, every_s)
    except AssertionError as e:
        raise AssertionError(f"{e}; the daemon's log ends:\n{log.read_text()[-4000:]}") from None


def failed_runs(instance) -> list[str]:
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    return [f"{r.run_id} ({r.tags.get('dagster/backfill')}): {r.asset_selection}" for r in runs]


def all_done(instance, keys: list[dg.AssetKey], partitions: list[str]) -> bool:
    failed = failed_runs(instance)
    assert not failed, f"runs failed: {failed}"
    return all(instance.get_materialized_partitions(k) >= set(partitions) for k in keys)


def released_after(instance, release: dg.AssetKey, inputs: list[dg.AssetKey]) -> bool:
    """The release was materialized after the last materialization of every shard of its inputs."""
    def last_id(key: dg.AssetKey) -> int:
        (record,) = instance.get_asset_records([key]) or [None]
        entry = record.asset_entry.last_materialization_record if record else None
        return entry.storage_id if entry else 0

    last = last_id(release)
    if not last:
        return False
    newest_input = max(last_id(k) for k in inputs)
    in_progress = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                                   dg.DagsterRunStatus.QUEUED]))
    return last > newest_input and not in_progress


def sensor_ticked(instance, name: str) -> bool:
    states = [s for s in instance.all_instigator_state() if s.instigator_name == name]
    return bool(states) and bool(instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id))


def viscon(stack, *args: str) -> str:
    out = subprocess.run([str(BIN / "viscon"), *args], env=stack.env, capture_output=True, text=True, timeout=600,
                         cwd=stack.folder)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout + out.stderr


def s3_mirror(stack, folder: Path) -> Path:
    """Every object of the bucket, copied into `folder` (to scan with the release checks' file reader)."""
    s3 = stack.s3()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket):
        for obj in page.get("Contents", []):
            target = folder / obj["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(stack.bucket, obj["Key"], str(target))
    return folder


def test_the_whole_graph_deployed_on_one_machine(tmp_path, monkeypatch, tokenizer_dir, tiny_student):
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    sample = tmp_path / "sample"
    write_sample(sample, SampleSpec(shards=2, docs_per_shard=10, seed=11, shards_1m=2, docs_per_shard_1m=4))
    teacher = ScriptedOpenAI()
    base_url = teacher.start()
    app_env = {
        "VISCON_HOME": os.environ["VISCON_HOME"],  # the tiny student (models/tiny-student), by absolute path
        "VISCON_TOKENIZER": str(tokenizer_dir), "VISCON_IMAGE_FILE_ROOTS": str(sample / "images"),
        "OPENAI_API_KEY": "test-key", "VISCON_CAPTIONER_RECIPE": RECIPE,
        **{f"VISCON_{role}_{k}": v for role, model in [("CAPTION", "scripted-vlm"), ("QA", "scripted-llm")]
           for k, v in [("BACKEND", "openai"), ("MODEL", model), ("BASE_URL", base_url),
                        ("OPTIONS", json.dumps({"max_concurrency": 8}))]},
        "VISCON_AUTOMATION_INTERVAL_S": "2",
        "VISCON_GPU_WINDOW": "* * * * *|0 0 1 1 *",   # opens every minute: the model stages run within a minute
        "VISCON_RELEASE_CRON": "* * * * *",            # the releases follow their shards within a minute
        "VISCON_PARTITIONS_PER_RUN": "10",             # both shards of a chain in one run
        "VISCON_EXECUTOR": "in_process",  # each run is its own process; its steps skip ~5 s of imports each
    }
    try:
        with running_stack(tmp_path / "stack", app_env) as stack:
            for k, v in stack.env.items():
                monkeypatch.setenv(k, v)
            daemon_log = stack.folder / "daemon.log"
            phases["services"] = time.perf_counter() - t0

            # the gpu pool's limit, as deploy/README.md sets it on a new database (it lives there, not in yaml)
            limit = subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "gpu", "1"],
                                   env=stack.env, capture_output=True, text=True, timeout=300)
            assert limit.returncode == 0, limit.stderr[-2000:]
            with graphql(stack) as run:
                for sensor in ("viscon_cpu_automation", "viscon_gpu_automation"):
                    started = run(START_SENSOR, {"selector": {
                        "repositoryLocationName": LOCATION, "repositoryName": "__repository__",
                        "sensorName": sensor}})["startSensor"]
                    assert started.get("sensorState", {}).get("status") == "RUNNING", started
            # a shard counts as new only once the sensors have seen the set without it (AutomationCondition's
            # newly_missing): register after their first evaluation
            with stack.instance() as instance:
                wait_for("the sensors' first ticks", lambda: all(sensor_ticked(instance, s) for s in (
                    "viscon_cpu_automation", "viscon_gpu_automation")), daemon_log, timeout_s=300, every_s=1)
            # the source shards on S3, as in production (a local folder's shard URLs are paths of this machine)
            s3 = stack.s3()
            for folder in ("shards", "shards_1m"):
                for shard in sorted((sample / folder).glob("*.parquet")):
                    s3.upload_file(str(shard), stack.bucket, f"sources/{folder}/{shard.name}")
            out = viscon(stack, "shards", "register", f"s3://{stack.bucket}/sources/shards/")
            assert "2 newly registered" in out, out
            out = viscon(stack, "shards", "register", "--set", "1m", f"s3://{stack.bucket}/sources/shards_1m/")
            assert "2 newly registered" in out, out

            with stack.instance() as instance:
                from dagster_postgres import PostgresEventLogStorage

                assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
                assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 1
                shards = sorted(instance.get_dynamic_partitions("obelics_shards"))
                shards_1m = sorted(instance.get_dynamic_partitions("obelics_shards_1m"))
                t = time.perf_counter()
                wait_for("the 100K chain", lambda: all_done(instance, [key("", n) for n in CHAIN], shards),
                         daemon_log)
                phases["100K chain (automation)"] = time.perf_counter() - t

                # the captioner: as the UI's "materialize" of these assets submits it, a backfill
                t = time.perf_counter()
                with graphql(stack) as run:
                    result = run(LAUNCH, {"params": {
                        "partitionsByAssets": [
                            {"assetKey": {"path": ["captioner_training_pairs"]}},
                            *({"assetKey": {"path": [name]}, "partitions": {"ranges": [{"start": RECIPE,
                                                                                        "end": RECIPE}]}}
                              for name in CAPTIONER[1:])],
                        "runConfigData": {"ops": CAPTIONER_OPS}, "title": "captioner"}})["launchPartitionBackfill"]
                assert result["__typename"] == "LaunchBackfillSuccess", result
                wait_for("the captioner", lambda: all_done(instance, [key("", CAPTIONER[2])], [RECIPE]), daemon_log)
                phases["captioner: pairs, training, evaluation"] = time.perf_counter() - t

                t = time.perf_counter()
                wait_for("the 1M chain", lambda: all_done(instance, [key("viscon_1m", n) for n in CHAIN], shards_1m),
                         daemon_log)
                phases["1M chain (automation)"] = time.perf_counter() - t
                t = time.perf_counter()
                for release, prefix in (("viscon_100k_release", ""), ("viscon_1m_release", "viscon_1m")):
                    inputs = [key(prefix, "conversations"), key(prefix, "unique_qa_pairs")]
                    wait_for(release, lambda r=release, i=inputs: released_after(instance, dg.AssetKey(r), i),
                             daemon_log)
                phases["releases (cron)"] = time.perf_counter() - t

                t = time.perf_counter()
                check_event_log(instance, shards, shards_1m)
                check_releases_load_from_s3(stack, tmp_path)
                check_no_machine_paths(stack, instance, tmp_path, sample)
                check_compute_logs_in_s3(stack, instance)
                check_nothing_changed_launches_no_gpu_step(stack, instance)
                phases["checks"] = time.perf_counter() - t
    finally:
        teacher.stop()
    phases["all"] = time.perf_counter() - t0
    print("\n" + "\n".join(f"{name}: {s:.0f} s" for name, s in phases.items()))


def check_event_log(instance, shards: list[str], shards_1m: list[str]) -> None:
    """Every asset of both chains per shard, the captioner per recipe, and every check of them per partition,
    in the Postgres event log."""
    from dagster._core.event_api import EventRecordsFilter
    from dagster._core.events import DagsterEventType

    for prefix, parts in (("", shards), ("viscon_1m", shards_1m)):
        for name in CHAIN:
            assert instance.get_materialized_partitions(key(prefix, name)) == set(parts), (prefix, name)
    assert instance.get_materialized_partitions(key("", "contextual_captioner")) == {RECIPE}
    records = instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION), limit=100_000)
    evaluated: dict[tuple, set] = {}
    for r in records:
        e = r.event_log_entry.dagster_event.event_specific_data
        evaluated.setdefault((e.asset_key, e.check_name), set()).add(e.partition)
    per_shard = {(k, c): p for (k, c), p in evaluated.items() if k.path[-1] in CHAIN}
    assert per_shard, "no asset check evaluated"
    for (asset, check), parts in per_shard.items():
        expected = set(shards_1m if asset.path[0] == "viscon_1m" else shards)
        assert parts >= expected, f"{asset.to_user_string()}:{check} evaluated for {sorted(parts)}"
    names = {k.path[-1] for k, _ in per_shard}
    assert {"filtered_docs", "images", "captions", "qa_pairs", "conversations"} <= names, names
    assert any(k.path[-1] == "captioner_evaluation" for k, _ in evaluated)  # the gate check


def check_releases_load_from_s3(stack, tmp_path: Path) -> None:
    from datasets import load_dataset
    from upath import UPath

    from viscon_dagster.core.exports.versions import current_release_path

    options = {"client_kwargs": {"endpoint_url": stack.s3_endpoint}, "key": "testing", "secret": "testing"}
    root = UPath(f"s3://{stack.bucket}/viscon", **options)
    for release in ("viscon_100k_release", "viscon_1m_release"):
        hf = current_release_path(root, release) / "hf"
        assert "config_name: leaky" in (hf / "README.md").read_text()  # the card declares the config
        # datasets reads an S3 folder through its parquet builder (a folder path is local or the Hub only)
        files = {split: [str(p) for p in (hf / "data" / "leaky").glob(f"{split}-*.parquet")]
                 for split in ("train", "test")}
        assert all(u.startswith(f"s3://{stack.bucket}/") for f in files.values() for u in f)
        ds = load_dataset("parquet", data_files={k: v for k, v in files.items() if v}, storage_options=options,
                          cache_dir=str(tmp_path / "hf_cache" / release))
        assert sum(split.num_rows for split in ds.values()) > 0, release


def check_no_machine_paths(stack, instance, tmp_path: Path, sample: Path) -> None:
    """No path of this machine in any materialization's metadata, any event of the log, or any stored object."""
    from dagster._core.event_api import EventRecordsFilter
    from dagster._core.events import DagsterEventType
    from dagster._serdes import serialize_value

    paths = {str(p) for p in (tmp_path, sample, REPO, Path.home(), Path(sys.prefix), Path(tempfile.gettempdir()))}
    leaks = []
    for kind in (DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION,
                 DagsterEventType.ASSET_OBSERVATION):
        for r in instance.get_event_records(EventRecordsFilter(kind), limit=100_000):
            data = r.event_log_entry.dagster_event.event_specific_data
            entry = getattr(data, "materialization", None) or getattr(data, "asset_observation", None) or data
            for name, value in (getattr(entry, "metadata", None) or {"event": data}).items():
                text = serialize_value(value)
                leaks += [(r.event_log_entry.dagster_event.asset_key.to_user_string(), name, p)
                          for p in paths if p in text]
    assert not leaks, leaks[:10]
    store = s3_mirror(stack, tmp_path / "s3_copy")
    files = {}
    for folder in ("viscon/viscon_100k_release", "viscon/viscon_1m_release", "viscon/contextual_captioner",
                   "viscon/captioner_evaluation", "viscon/_registry"):
        files.update(files_with_paths(store / folder, paths))
    assert not files, files


def check_compute_logs_in_s3(stack, instance) -> None:
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    keys = [o["Key"] for page in stack.s3().get_paginator("list_objects_v2").paginate(
        Bucket=stack.bucket, Prefix=LOGS_PREFIX) for o in page.get("Contents", [])]
    assert keys, "no compute log in S3"
    for run in runs[:3]:
        assert any(run.run_id in k for k in keys), f"no compute log of run {run.run_id} in S3"


def check_nothing_changed_launches_no_gpu_step(stack, instance) -> None:
    gpu_steps = lambda: sum(1 for r in instance.get_runs()  # noqa: E731
                            for k in (r.asset_selection or ()) if k.path[-1] in GPU_STAGES | {CAPTIONER[1]})
    before = gpu_steps()
    for shard_set in ("100k", "1m"):
        out = viscon(stack, "backfill", "--select", "filtered_docs", "--set", shard_set, "--stale", "--downstream")
        assert "nothing to backfill" in out, out
    time.sleep(15)  # several automation ticks (every 2 s) with the GPU window open
    assert gpu_steps() == before
