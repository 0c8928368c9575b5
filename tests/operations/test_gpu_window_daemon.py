"""The GPU automation sensor on a real daemon, the window open, one shard whose model server answers 500 to every
request: the shard is requested once per window opening — not at every tick while the window stays open — and
the runs the sensor launches carry the GPU run tags the launchers route on (viscon_dagster/gpu.py).

The window opens at every minute here (`VISCON_GPU_WINDOW="* * * * *|0 0 1 1 *"`), the sensor ticks every few
seconds: each opening may request the shard once, so at most one run per minute. (One shard's request is one
run, not a backfill: Dagster launches a request that fits one run as a run.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from aiohttp import web

from tests.chain.scripted_openai import ScriptedOpenAI
from tests.conftest import materialize_partition
from tests.operations.harness import WAIT_S, daemon_on, new_instance, wait_for
from viscon_dagster.definitions import build_definitions
from viscon_dagster.gpu import gpu_run_tags
from viscon_dagster.resources.shard_source import record_shards

DEFS = Path(__file__).with_name("chain_defs.py")
BIN = Path(sys.executable).parent
SENSOR = "viscon_gpu_automation"


class FailingServer(ScriptedOpenAI):
    """An OpenAI-protocol server that answers 500 to every chat request (counted)."""

    async def _chat(self, request):
        self.requests += 1
        return web.json_response({"error": {"message": "the model crashed", "type": "server_error"}}, status=500)


def sensor_ticks(instance) -> list:
    states = [s for s in instance.all_instigator_state() if s.instigator_name == SENSOR]
    return instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id) if states else []


def shard_runs(instance, key: str) -> list[dg.RunRecord]:
    """The runs the sensor launched for `key` (one per request of the shard), oldest first."""
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": SENSOR, "dagster/partition": key}))
    return sorted(records, key=lambda r: r.create_timestamp)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_failing_gpu_shard_is_requested_once_per_window_and_its_runs_carry_the_gpu_tags(
        tmp_path, monkeypatch, sample_dir, tokenizer_dir):
    server = FailingServer()
    env = {"VISCON_STORAGE_ROOT": str(tmp_path / "store"), "VISCON_TOKENIZER": str(tokenizer_dir),
           "VISCON_IMAGE_FILE_ROOTS": str(sample_dir / "images"), "VISCON_AUTOMATION_INTERVAL_S": "2",
           "VISCON_GPU_WINDOW": "* * * * *|0 0 1 1 *",  # opens every minute, stays open
           "VISCON_CAPTION_BACKEND": "openai", "VISCON_CAPTION_MODEL": "scripted-vlm",
           "VISCON_CAPTION_BASE_URL": server.start(), "VISCON_CAPTION_OPTIONS": '{"max_attempts": 1}',
           "OPENAI_API_KEY": "test-key", "DAGSTER_HOME": str(tmp_path / "home"),
           "VISCON_EXECUTOR": "in_process"}  # steps skip ~5 s of imports each
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        with new_instance(tmp_path / "home") as instance:
            defs = build_definitions()
            key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
            assert materialize_partition(defs, ["filtered_docs", "images"], key, instance).success
            with daemon_on(instance, DEFS, tmp_path) as workspace:
                subprocess.run([str(BIN / "dagster"), "sensor", "start", SENSOR, "-w", str(workspace.yaml)],
                               check=True, capture_output=True, timeout=WAIT_S)
                # the first opening after the sensor's first tick requests the shard
                (first,) = wait_for("the shard's first run", lambda: shard_runs(instance, key))
                wait_for("its failure", lambda: instance.get_run_by_id(first.dagster_run.run_id).is_finished)
                assert instance.get_run_by_id(first.dagster_run.run_id).status == dg.DagsterRunStatus.FAILURE
                assert server.requests > 0  # the model server was asked, and failed the step
                ticks_then = len(sensor_ticks(instance))
                wait_for("six more ticks of the open window", lambda: len(sensor_ticks(instance)) >= ticks_then + 6)
            records = shard_runs(instance, key)
            minutes = [int(r.create_timestamp.timestamp() // 60) for r in records]
            assert len(minutes) == len(set(minutes)), minutes  # at most one request per opening, not one per tick
            assert len(records) <= 2  # ~30 s of ticks after the first failed: its opening, perhaps the next one
            for record in records:
                assert gpu_run_tags().items() <= record.dagster_run.tags.items()  # what ECS/K8s launchers route on
    finally:
        server.stop()
