"""Two runs of one partition at once never pay twice: the partition lease (core/files/lease.py) lets one run
ask the model while the other waits, or fails naming the run that holds the partition.

The OpenAI-protocol double holds every answer until the test opens its gate, so the first run is
still working, lease held, while the second reaches the lease: the overlap is certain, not timed.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from upath import UPath

from tests.conftest import materialize_partition
from tests.models.openai_double import OpenAIDouble
from viscon_dagster.core.files.lease import LeaseHeld
from viscon_dagster.core.models.request import Request
from viscon_dagster.definitions import build_definitions
from viscon_dagster.resources.models import OpenAIHTTPBackend
from viscon_dagster.resources.shard_source import record_shards

pytestmark = pytest.mark.slow  # real servers, daemons or training: the slow tier

REPO = Path(__file__).resolve().parents[2]


class GatedDouble(OpenAIDouble):
    """The double, answering nothing until `gate` is set (a request waits, as on a stalled server).
    `received` is every chat request body as it arrived, answered yet or not."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.gate = threading.Event()
        self.received: list[dict] = []

    async def _chat(self, request):
        import asyncio

        self.received.append(await request.json())  # aiohttp keeps the body for the double to read again
        while not self.gate.is_set():
            await asyncio.sleep(0.02)
        return await super()._chat(request)

    def asked(self) -> collections.Counter:
        """How often each distinct request (model, messages, params) reached the server."""
        return collections.Counter(json.dumps(body, sort_keys=True) for body in self.received)


@pytest.fixture
def gated():
    server = GatedDouble().start()
    yield server
    server.gate.set()
    server.stop()


def _wait_for(condition, what: str, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def test_backend_calls_on_one_journal_ask_each_request_once(gated, tmp_path):
    journal_dir = UPath(tmp_path.as_uri()) / "captions" / "_journal" / "shard-0"
    reqs = [Request.user(f"caption {i}") for i in range(12)]

    def backend(wait_s: float, **kw) -> OpenAIHTTPBackend:
        return OpenAIHTTPBackend(model="m", base_url=gated.base_url, api_key="k", max_concurrency=4,
                                 lease_wait_s=wait_s, **kw)

    results: dict[str, list] = {}
    first = threading.Thread(target=lambda: results.update(first=backend(60).generate(
        reqs, journal_dir=journal_dir, lease_owner="first-run")))
    first.start()
    _wait_for(lambda: gated.received, "the first call to ask (it holds the lease)")

    with pytest.raises(LeaseHeld, match="partition shard-0 of captions is being materialized by run first-run "):
        # were it let through, it would ask the stalled server, time out and return errors instead of raising
        backend(0, timeout_s=2, max_attempts=1).generate(reqs, journal_dir=journal_dir, lease_owner="impatient-run")
    waiting = threading.Thread(target=lambda: results.update(waiting=backend(60).generate(
        reqs, journal_dir=journal_dir, lease_owner="patient-run")))
    waiting.start()
    gated.gate.set()
    first.join(120)
    waiting.join(120)

    assert [r.text for r in results["first"]] == [f"echo: caption {i}" for i in range(12)]
    assert [r.text for r in results["waiting"]] == [r.text for r in results["first"]]
    assert all(r.cached for r in results["waiting"])  # it waited, then paid for nothing
    assert len(gated.received) == 12 and set(gated.asked().values()) == {1}
    assert not (journal_dir / "lease.json").exists()


def _materialize(key: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "viscon_dagster.definitions",
             "--select", "captions", "--partition", key],
            cwd=REPO, env={**os.environ}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def test_two_materializations_of_one_partition_at_once_pay_once(gated, tmp_path, sample_dir, tokenizer_dir,
                                                                monkeypatch):
    env = {"VISCON_STORAGE_ROOT": (tmp_path / "store").as_uri(), "VISCON_TOKENIZER": str(tokenizer_dir),
           "VISCON_IMAGE_FILE_ROOTS": str(sample_dir / "images"), "VISCON_CAPTION_BACKEND": "openai",
           "VISCON_CAPTION_MODEL": "double-vlm", "VISCON_CAPTION_BASE_URL": gated.base_url,
           "OPENAI_API_KEY": "test-key",
           # fail at once rather than wait; the gated answers must not time out
           "VISCON_CAPTION_OPTIONS": json.dumps({"lease_wait_s": 0, "timeout_s": 600, "max_concurrency": 4})}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    defs = build_definitions()
    key = record_shards(defs.resources["storage"], str(sample_dir / "shards"))[0]
    instance = dg.DagsterInstance.get()
    assert materialize_partition(defs, ["filtered_docs", "images"], key, instance).success
    images = pq.read_table(tmp_path / "store" / "images" / f"{key}.parquet")
    total = sum(s == "ok" for s in images.column("status").to_pylist())
    lease_file = tmp_path / "store" / "captions" / "_journal" / key / "lease.json"

    logs = [tmp_path / "run-a.log", tmp_path / "run-b.log"]
    procs = [_materialize(key, log) for log in logs]
    try:
        # the gate is shut: the holder cannot finish, so the other one meets the held lease and gives up
        _wait_for(lambda: any(p.poll() is not None for p in procs), "one of the runs to give up")
        loser = next(i for i, p in enumerate(procs) if p.poll() is not None)
        winner = 1 - loser
        holder = json.loads(lease_file.read_text())["owner"]
        assert procs[loser].returncode != 0 and procs[winner].poll() is None
        assert holder.startswith("run ") and instance.get_run_by_id(holder[len("run "):]) is not None
        message = " ".join(logs[loser].read_text().split())
        assert f"partition {key} of captions is being materialized by {holder} (lease held since" in message

        gated.gate.set()
        assert procs[winner].wait(300) == 0, logs[winner].read_text()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert len(gated.received) == total and set(gated.asked().values()) == {1}  # every request answered once
    assert not lease_file.exists()

    rerun = materialize_partition(defs, ["captions"], key, instance)  # the failed run, retried
    assert rerun.success and len(gated.received) == total  # paid for nothing
    captions = pq.read_table(tmp_path / "store" / "captions" / f"{key}.parquet")
    assert captions.num_rows == total and all(captions.column("from_journal").to_pylist())
