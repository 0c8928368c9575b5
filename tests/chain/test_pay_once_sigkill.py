"""Pay once: a captions materialization killed with SIGKILL mid-partition resumes without re-asking.

The first materialization runs as `dagster asset materialize` in its own process against a slow
loopback OpenAI-protocol server; it is killed once some answers have arrived. The rerun must ask
only what the journal does not hold.
"""

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
from viscon_dagster.definitions import build_definitions
from viscon_dagster.resources.shard_source import record_shards

pytestmark = pytest.mark.slow  # real servers, daemons or training: the slow tier

REPO = Path(__file__).resolve().parents[2]


def test_sigkill_mid_partition_then_rerun_pays_only_for_the_rest(tmp_path, sample_dir, tokenizer_dir, monkeypatch):
    server = ScriptedOpenAI(latency_s=0.05, capacity=1)  # answers arrive one by one
    base_url = server.start()
    env = {"VISCON_STORAGE_ROOT": (tmp_path / "store").as_uri(), "VISCON_TOKENIZER": str(tokenizer_dir),
           "VISCON_IMAGE_FILE_ROOTS": str(sample_dir / "images"), "VISCON_CAPTION_BACKEND": "openai",
           "VISCON_CAPTION_MODEL": "scripted-vlm", "VISCON_CAPTION_BASE_URL": base_url,
           "OPENAI_API_KEY": "test-key"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        defs = build_definitions()
        key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
        instance = dg.DagsterInstance.get()  # the persistent instance under DAGSTER_HOME (conftest)
        assert materialize_partition(defs, ["filtered_docs", "images"], key, instance).success
        images = pq.read_table(tmp_path / "store" / "images" / f"{key}.parquet")
        total = sum(s == "ok" for s in images.column("status").to_pylist())

        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "viscon_dagster.definitions",
             "--select", "captions", "--partition", key],
            cwd=REPO, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while server.answered < total // 3 and time.monotonic() < deadline:
            assert proc.poll() is None, "the materialization ended before it could be killed"
            time.sleep(0.05)
        time.sleep(0.5)  # let in-flight answers land in the journal
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        asked_before_kill = server.requests

        result = materialize_partition(defs, ["captions"], key, instance)
        assert result.success
        md = {k: v.value for k, v in result.asset_materializations_for_node("captions")[0].metadata.items()}
        asked_on_rerun = server.requests - asked_before_kill
        captions = pq.read_table(tmp_path / "store" / "captions" / f"{key}.parquet")
        from_journal = sum(captions.column("from_journal").to_pylist())
        assert captions.num_rows == total
        assert from_journal > 0 and asked_on_rerun == total - from_journal  # nothing answered is asked again
        assert asked_on_rerun < total
        assert md["caption_model"] == "scripted-vlm"
    finally:
        server.stop()
