"""The operating loop against a real `dagster-daemon`: shards copied into the watched folder are registered and
backfilled by the automation sensor (several shards per run); after a Q&A prompt change only `qa_pairs` is
stale, and `viscon backfill --stale` reruns exactly those shards, asking the model only the new requests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from tests.chain.scripted_openai import ScriptedOpenAI
from tests.operations.harness import WAIT_S, daemon_on, new_instance, wait_for
from viscon_dagster.partitions import obelics_shards

pytestmark = pytest.mark.slow  # real servers, daemons or training: the slow tier

DEFS = Path(__file__).with_name("chain_defs.py")
BIN = Path(sys.executable).parent
CPU = ["filtered_docs", "images"]
MODEL_STAGES = ["captions", "qa_pairs", "unique_qa_pairs", "conversations"]


def materialized(instance, name):
    return instance.get_materialized_partitions(dg.AssetKey(name))


def viscon(*args, workspace) -> str:
    out = subprocess.run([str(BIN / "viscon"), *args, "--workspace", str(workspace.yaml)], capture_output=True,
                         text=True, timeout=3 * WAIT_S, env=os.environ.copy())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def sensor_ticked(instance, name):
    states = [s for s in instance.all_instigator_state() if s.instigator_name == name]
    return states and instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id)


@pytest.fixture
def scripted_env(tmp_path, monkeypatch, sample_dir, tokenizer_dir):
    server = ScriptedOpenAI()
    base_url = server.start()
    watched = tmp_path / "watched"
    watched.mkdir()
    env = {"VISCON_STORAGE_ROOT": str(tmp_path / "store"), "VISCON_TOKENIZER": str(tokenizer_dir),
           "VISCON_IMAGE_FILE_ROOTS": str(sample_dir / "images"), "VISCON_SHARD_SOURCE": str(watched),
           "VISCON_SHARD_SENSOR_INTERVAL_S": "2", "VISCON_AUTOMATION_INTERVAL_S": "2",
           "VISCON_GPU_WINDOW": "0 0 1 1 *|1 0 1 1 *",  # closed: model stages wait for it (or a backfill)
           "VISCON_CAPTION_BACKEND": "openai", "VISCON_CAPTION_MODEL": "scripted-vlm",
           "VISCON_CAPTION_BASE_URL": base_url, "VISCON_QA_BACKEND": "openai", "VISCON_QA_MODEL": "scripted-llm",
           "VISCON_QA_BASE_URL": base_url, "OPENAI_API_KEY": "test-key", "VISCON_PARTITIONS_PER_RUN": "10",
           "DAGSTER_HOME": str(tmp_path / "home"),
           "VISCON_EXECUTOR": "in_process"}  # steps skip ~5 s of imports each (test_queue_and_pool: multiprocess)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    shards = sorted(p.name for p in (sample_dir / "shards").glob("*.parquet"))
    return server, watched, shards


@pytest.mark.timeout(1500)  # a daemon, its code server and runs on a shared 2-core machine
def test_new_shards_are_registered_and_backfilled_by_automation(tmp_path, sample_dir, scripted_env):
    _, watched, shards = scripted_env
    keys = [Path(s).stem for s in shards]
    with new_instance(tmp_path / "home") as instance, daemon_on(instance, DEFS, tmp_path) as workspace:
        for sensor in ("obelics_shard_sensor", "viscon_cpu_automation"):
            subprocess.run([str(BIN / "dagster"), "sensor", "start", sensor, "-w", str(workspace.yaml)],
                           check=True, capture_output=True, timeout=WAIT_S)
        wait_for("the automation sensor's first evaluation",
                 lambda: sensor_ticked(instance, "viscon_cpu_automation"))
        for name in shards:
            shutil.copy(sample_dir / "shards" / name, watched / name)
        wait_for("the shards' CPU stages",
                 lambda: all(materialized(instance, a) >= set(keys) for a in CPU), timeout_s=2 * WAIT_S)
        assert set(instance.get_dynamic_partitions(obelics_shards.name)) == set(keys)
        runs = instance.get_runs()
        assert runs and all(r.tags.get("dagster/backfill") for r in runs)  # nothing launched by hand
        # one run per stage (a stage waits for its materialized inputs: automation._inputs_ready), each carrying
        # both shards
        assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
                for r in runs] == [(keys[0], keys[-1])] * len(CPU)
        assert not materialized(instance, "captions")  # outside the GPU window


@pytest.mark.timeout(1500)
def test_a_prompt_change_reruns_only_the_stale_shards(tmp_path, monkeypatch, sample_dir, scripted_env):
    server, _, shards = scripted_env
    keys = [Path(s).stem for s in shards]
    with new_instance(tmp_path / "home") as instance:
        with daemon_on(instance, DEFS, tmp_path) as workspace:
            subprocess.run([str(BIN / "viscon"), "shards", "register", str(sample_dir / "shards")], check=True,
                           capture_output=True, timeout=WAIT_S)
            out = viscon("backfill", "--select", ",".join(CPU + MODEL_STAGES), "--wait", workspace=workspace)
            assert "captions: 2 shards" in out
            assert all(materialized(instance, a) == set(keys) for a in CPU + MODEL_STAGES)
        asked = server.requests
        qa_before = {k: pq.read_table(tmp_path / "store" / "qa_pairs" / f"{k}.parquet") for k in keys}
        captions_runs = len(instance.fetch_materializations(dg.AssetKey("captions"), limit=100).records)

        monkeypatch.setenv("VISCON_TEST_QA_PROMPT", "v2")  # the next deploy carries a changed Q&A prompt
        with daemon_on(instance, DEFS, tmp_path) as workspace:
            out = viscon("backfill", "--select", ",".join(CPU + MODEL_STAGES), "--stale", "--wait",
                         workspace=workspace)
            planned = [line.strip() for line in out.splitlines() if line.startswith("  ") and "shards" in line
                       and "done" not in line]
            assert planned == ["qa_pairs: 2 shards"], out
            assert "nothing to backfill" in viscon("backfill", "--select", "qa_pairs", "--stale", workspace=workspace)
        qa_after = {k: pq.read_table(tmp_path / "store" / "qa_pairs" / f"{k}.parquet") for k in keys}
        assert len(instance.fetch_materializations(dg.AssetKey("captions"), limit=100).records) == captions_runs
        new_requests = sum(len(set(t.column("fingerprint").to_pylist())) for t in qa_after.values())
        versions_before = {v for t in qa_before.values() for v in t.column("prompt_version").to_pylist()}
        versions_after = {v for t in qa_after.values() for v in t.column("prompt_version").to_pylist()}
        assert len(versions_after) == 1 and versions_after.isdisjoint(versions_before)  # the edit is the version
        assert all(set(qa_before[k].column("fingerprint").to_pylist()).isdisjoint(
            qa_after[k].column("fingerprint").to_pylist()) for k in keys)
        # only the Q&A requests were asked (the captions were not rerun), each once (repair turns aside)
        assert new_requests <= server.requests - asked <= 3 * new_requests
