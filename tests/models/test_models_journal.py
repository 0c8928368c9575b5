import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from upath import UPath

from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import Response

REPO = Path(__file__).resolve().parents[2]


def resp(fp, status="ok", text="t"):
    return Response(fingerprint=fp, model="m", backend="b", status=status, text=text)


def test_put_load_compact_roundtrip(storage_root):
    j = Journal(storage_root / "journal")
    j.put(resp("a"))
    j.put(resp("b", status="refused"))
    j.put(resp("c", status="error"))  # errors are not answers: never journaled
    assert set(Journal(storage_root / "journal").load()) == {"a", "b"}
    assert j.compact() == 2
    assert not list((storage_root / "journal" / "entries").iterdir())
    j.put(resp("d"))
    again = Journal(storage_root / "journal").load()
    assert set(again) == {"a", "b", "d"} and again["b"].status == "refused"


def test_torn_entry_is_ignored(storage_root):
    j = Journal(storage_root / "journal")
    j.put(resp("a"))
    (storage_root / "journal" / "entries" / "zz.json").write_text('{"fingerprint": "zz", "mod')
    assert set(Journal(storage_root / "journal").load()) == {"a"}


def test_state(storage_root):
    j = Journal(storage_root / "journal")
    assert j.get_state("batch-1") is None
    j.put_state("batch-1", {"id": "batch_x"})
    assert Journal(storage_root / "journal").states("batch-") == {"batch-1": {"id": "batch_x"}}
    j.delete_state("batch-1")
    assert j.get_state("batch-1") is None


def test_group_writes_load_and_compact(storage_root):
    j = Journal(storage_root / "journal")
    j.put_many([resp("a"), resp("b"), resp("x", status="error")])
    assert len(list((storage_root / "journal" / "entries").iterdir())) == 1
    assert set(Journal(storage_root / "journal").load()) == {"a", "b"}
    assert j.compact() == 2 and set(Journal(storage_root / "journal").load()) == {"a", "b"}


def start(*args: str, options: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.models.journal_compact_child", *args], cwd=REPO,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "JOURNAL_CHILD_OPTIONS": json.dumps(options or {})})


def race(root: str, stop: Path, n: int, options: dict | None = None) -> dict[str, str]:
    """Two processes putting and compacting the same journal while a third loads it; their outputs."""
    loader = start("loader", root, str(stop), options=options)
    writers = [start("writer", root, tag, str(n), options=options) for tag in ("a", "b")]
    out = {}
    for name, proc in [("a", writers[0]), ("b", writers[1])]:
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stderr  # no FileNotFoundError out of compact() or load()
        out[name] = stdout
    stop.touch()
    stdout, stderr = loader.communicate()
    assert loader.returncode == 0, stdout + stderr  # every load saw every answer an earlier load saw
    out["loader"] = stdout
    return out


def test_concurrent_compaction_raises_nothing_and_loses_nothing(tmp_path):
    root = tmp_path / "journal"
    out = race(str(root), tmp_path / "stop", 400)
    assert out["loader"].startswith("loads ")
    loaded = Journal(UPath(root)).load()
    assert set(loaded) == {f"{t}-{i}" for t in "ab" for i in range(400)}
    assert loaded["b-7"].text == "b 7"
    assert list((root / "entries").iterdir()) == []  # all folded


@pytest.mark.slow
def test_concurrent_compaction_on_s3(s3_server, s3_bucket, tmp_path):
    name, client = s3_bucket
    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server}}
    race(f"s3://{name}/journal", tmp_path / "stop", 60, opts)
    assert set(Journal(UPath(f"s3://{name}/journal", **opts)).load()) == {f"{t}-{i}" for t in "ab" for i in range(60)}
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name, Prefix="journal/")["Contents"]]
    assert keys and all(k.startswith("journal/segments/") for k in keys)

