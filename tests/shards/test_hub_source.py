"""The Hub source (`hf://datasets/<repo>/<folder>`): listing, the footer check and registration, through the real
`huggingface_hub` filesystem and `datasets`, against tests/shards/hub_double.py — a loopback double of the few Hub
routes they call, because the Hugging Face Hub cannot be reached from here. Each process is pointed at it with
HF_ENDPOINT, as a user would point it at a Hub mirror."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.shards.hub_double import HubDouble

pytestmark = pytest.mark.slow  # `viscon shards register` loads the definitions in its own process

REPO_ID = "test-org/obelics-mini"
SOURCE = f"hf://datasets/{REPO_ID}/data"
BIN = Path(sys.executable).parent
PROBE = """
import json, sys
from viscon_dagster.core.shards.sources import check_shards, iter_record_batches, list_shards
refs = list_shards(sys.argv[1])
reasons = check_shards(refs)
good = [r for r in refs if r.key not in reasons]
rows = sum(b.num_rows for b in iter_record_batches(good[0].url, batch_size=4))
print(json.dumps({"refs": [[r.key, r.url] for r in refs], "reasons": reasons, "rows": rows, "first": good[0].key}))
"""


@pytest.fixture
def hub(tmp_path, sample_dir):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    for shard in sorted((sample_dir / "shards").glob("*.parquet")):
        shutil.copy(shard, repo / "data" / shard.name)
    (repo / "data" / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file")
    pq.write_table(pa.table({"text": ["a"]}), repo / "data" / "other-columns.parquet")
    (repo / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n")
    double = HubDouble(REPO_ID, repo)
    url = double.start()
    yield double, url, repo
    double.stop()


def hub_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}


def test_hub_shards_are_listed_checked_and_streamed(hub, tmp_path):
    double, url, repo = hub
    out = subprocess.run([sys.executable, "-c", PROBE, SOURCE], env=hub_env(url, tmp_path), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    keys = [k for k, _ in found["refs"]]
    assert keys == sorted(["broken", "other-columns", *(p.stem for p in (repo / "data").glob("sample-*.parquet"))])
    assert all(u.startswith(SOURCE + "/") for _, u in found["refs"])  # the Hub URL, never a local path
    assert set(found["reasons"]) == {"broken", "other-columns"}
    assert "not a readable parquet file" in found["reasons"]["broken"]
    assert "missing columns" in found["reasons"]["other-columns"]
    assert found["rows"] == pq.read_metadata(repo / "data" / f"{found['first']}.parquet").num_rows  # streamed whole
    assert not double.unknown, double.unknown
    assert any("/resolve/" in r for r in double.requests)  # the footer and rows came over HTTP


def test_viscon_registers_the_hub_shards_and_refuses_the_bad_ones(hub, tmp_path):
    double, url, repo = hub
    store = tmp_path / "store"
    env = {**hub_env(url, tmp_path), "VISCON_STORAGE_ROOT": str(store)}
    out = subprocess.run([str(BIN / "viscon"), "shards", "register", SOURCE], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr[-3000:]  # refused shards: exit status 1
    assert "2 newly registered; 2 refused" in out.stdout, out.stdout
    assert "refused broken" in out.stdout and "refused other-columns" in out.stdout
    good = sorted(p.stem for p in (repo / "data").glob("sample-*.parquet"))
    for key in good:
        record = json.loads((store / "_registry" / "shards" / f"{key}.json").read_text())
        assert record["url"] == f"{SOURCE}/{key}.parquet", record
    assert {p.stem for p in (store / "_registry" / "bad_shards").glob("*.json")} == {"broken", "other-columns"}
    listed = subprocess.run([str(BIN / "viscon"), "shards", "list"], env=env, capture_output=True, text=True,
                            timeout=600)
    assert listed.stdout.split() == good, listed.stdout
    assert not double.unknown, double.unknown
