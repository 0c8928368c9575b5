"""A killed `captions` run frees what it held: SIGKILL of `dagster asset materialize --select captions` mid-partition,
on the instance `viscon` writes (the `gpu` pool limited to 1), then a rerun of the same partition.

Before viscon_dagster/dead_runs.py the dead run stayed STARTED holding the pool's only slot, and the rerun waited
forever ("Step blocked by limit for pool gpu"). Now:
- without a daemon, the rerun's own process finds the dead run (its run lease names a process of this machine that
  is gone), marks it failed with the reason and frees its slot, then completes;
- with a daemon, the `viscon_dead_runs` sensor does it before any rerun. There only the CLI process is killed: the
  multiprocess executor's step process outlives it and keeps its journal lease, so the rerun waits for it.
Either way nothing answered 0.5 s or more before the kill is asked again.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from tests.chain.scripted_openai import ScriptedOpenAI
from tests.conftest import materialize_partition
from tests.operations.harness import WAIT_S, daemon_on, new_instance, wait_for
from viscon_dagster.definitions import build_definitions
from viscon_dagster.resources.shard_source import record_shards

DEFS = Path(__file__).with_name("chain_defs.py")
DAGSTER = str(Path(sys.executable).with_name("dagster"))


class RecordingServer(ScriptedOpenAI):
    """The scripted teacher, recording when each distinct request was asked and first answered."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.asked: list[tuple[float, str]] = []
        self.answered_at: dict[str, float] = {}

    async def _chat(self, request):
        key = json.dumps(await request.json(), sort_keys=True)  # aiohttp keeps the body for the server to read
        self.asked.append((time.time(), key))
        response = await super()._chat(request)
        self.answered_at.setdefault(key, time.time())
        return response

    def answered_before(self, t: float) -> set[str]:
        return {k for k, at in self.answered_at.items() if at <= t}

    def asked_after(self, t: float) -> list[str]:
        return [k for at, k in self.asked if at > t]


def materialize_captions(key: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([DAGSTER, "asset", "materialize", "-m", "viscon_dagster.definitions", "--select",
                             "captions", "--partition", key], env=os.environ.copy(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def kill_midway(proc: subprocess.Popen, server: RecordingServer, total: int, group: bool) -> float:
    """SIGKILL once a third of the partition's answers arrived; the time of the kill."""
    start = server.answered
    wait_for("a third of the answers", lambda: proc.poll() is not None or server.answered - start >= total // 3,
             every_s=0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.5)  # some answers land in the journal
    killed_at = time.time()
    os.killpg(proc.pid, signal.SIGKILL) if group else os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed_at


def the_started_run(instance, key: str) -> dg.DagsterRun:
    (run,) = [r for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
              if r.tags.get("dagster/partition") == key]
    return run


def failure_message(instance, run_id: str) -> str:
    (event,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return event.message


def gpu_slot_holders(instance) -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots}


def sensor_skip_reasons(instance, name: str) -> list[str]:
    (state,) = [s for s in instance.all_instigator_state() if s.instigator_name == name]
    return [t.skip_reason for t in instance.get_ticks(state.instigator_origin_id, state.selector_id)]


def rerun(key: str, log: Path) -> None:
    """The rerun, bounded: before the fix it never ended."""
    with log.open("w") as out:
        done = subprocess.run([DAGSTER, "asset", "materialize", "-m", "viscon_dagster.definitions", "--select",
                               "captions", "--partition", key], env=os.environ.copy(), stdout=out,
                              stderr=subprocess.STDOUT, timeout=WAIT_S)
    assert done.returncode == 0, log.read_text()[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(1500)  # a daemon, its code server and four runs on a shared 2-core machine
def test_a_killed_captions_run_frees_its_gpu_slot_and_the_rerun_pays_nothing_twice(
        tmp_path, monkeypatch, sample_dir, tokenizer_dir):
    server = RecordingServer(latency_s=0.15, capacity=1)  # answers arrive one by one
    env = {"VISCON_STORAGE_ROOT": str(tmp_path / "store"), "VISCON_TOKENIZER": str(tokenizer_dir),
           "VISCON_IMAGE_FILE_ROOTS": str(sample_dir / "images"), "VISCON_CAPTION_BACKEND": "openai",
           "VISCON_CAPTION_MODEL": "scripted-vlm", "VISCON_CAPTION_BASE_URL": server.start(),
           "OPENAI_API_KEY": "test-key", "DAGSTER_HOME": str(tmp_path / "home"),
           "VISCON_DEAD_RUN_INTERVAL_S": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    procs = []
    try:
        with new_instance(tmp_path / "home") as instance:  # the `gpu` pool: limit 1
            defs = build_definitions()
            keys = record_shards(defs.resources["storage"], str(sample_dir / "shards"))
            totals = {}
            for key in keys:
                assert materialize_partition(defs, ["filtered_docs", "images"], key, instance).success
                images = pq.read_table(tmp_path / "store" / "images" / f"{key}.parquet")
                totals[key] = sum(s == "ok" for s in images.column("status").to_pylist())

            # without a daemon: the whole run killed (its process group), then rerun from the CLI
            key = keys[0]
            procs.append(materialize_captions(key, tmp_path / "killed.log"))
            killed_at = kill_midway(procs[-1], server, totals[key], group=True)
            dead = the_started_run(instance, key)
            assert gpu_slot_holders(instance) == {dead.run_id}  # the pool's only slot, held by a dead run
            rerun(key, tmp_path / "rerun.log")
            assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
            assert "the process running this run is dead (its process (pid " in failure_message(instance, dead.run_id)
            assert f"Run {dead.run_id} was marked failed" in (tmp_path / "rerun.log").read_text()
            assert pq.read_table(tmp_path / "store" / "captions" / f"{key}.parquet").num_rows == totals[key]
            early = server.answered_before(killed_at - 0.5)
            assert early and early.isdisjoint(server.asked_after(killed_at))

            # with a daemon: only the CLI process killed; the sensor fails the run before anyone reruns it
            key, mark = keys[1], len(server.asked)
            with daemon_on(instance, DEFS, tmp_path):
                procs.append(materialize_captions(key, tmp_path / "killed2.log"))
                killed_at = kill_midway(procs[-1], server, totals[key], group=False)
                dead = the_started_run(instance, key)
                wait_for("the sensor to fail the dead run",
                         lambda: instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE)
                assert "(its process (pid " in failure_message(instance, dead.run_id)
                assert "marked 1 dead runs failed" in sensor_skip_reasons(instance, "viscon_dead_runs")
                assert dead.run_id not in gpu_slot_holders(instance)
                rerun(key, tmp_path / "rerun2.log")  # waits for the step process still journaling, if it is
            assert pq.read_table(tmp_path / "store" / "captions" / f"{key}.parquet").num_rows == totals[key]
            early = server.answered_before(killed_at - 0.5)
            assert early and early.isdisjoint(server.asked_after(killed_at))
            # nobody died mid-request: each request of this shard was asked once, by the old step or the rerun
            asked = collections.Counter(k for _, k in server.asked[mark:])
            assert max(asked.values()) == 1
    finally:
        for proc in procs:  # a step process that outlived its run
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        server.stop()
