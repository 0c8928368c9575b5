"""Parquet outputs publish whole: a kill, an error or a concurrent writer never leaves a torn file under
the final name, locally (temp + rename) or on S3 (one upload, aborted on error), with real processes
and moto's S3 server on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from upath import UPath

from tests.files.parquet_rows import SCHEMA, rows, table, whole_from_one_writer
from viscon_dagster.core.files.atomic import STALE_TEMP_S
from viscon_dagster.core.files.parquet import ParquetStreamWriter, list_parquet, read_parquet, write_parquet

REPO = Path(__file__).resolve().parents[2]


def child(*args: str, options: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.files.parquet_child", *args], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PARQUET_CHILD_OPTIONS": json.dumps(options or {})})


def kill_mid_write(path: str, rows: int = 3000, options: dict | None = None) -> None:
    proc = child("hold", path, "new", str(rows), options=options)
    line = proc.stdout.readline()
    assert line == "writing\n", proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


@pytest.fixture
def store(tmp_path) -> Path:
    (tmp_path / "store").mkdir()
    return tmp_path / "store"


def test_kill_mid_write_keeps_the_previous_file(store):
    out = UPath(store) / "shard-0.parquet"
    write_parquet(table("old", 100), out)
    kill_mid_write(str(out))
    assert whole_from_one_writer(read_parquet(out), 100) == "old"
    leftovers = sorted(p.name for p in store.iterdir())
    assert leftovers[-1] == "shard-0.parquet" and len(leftovers) == 2  # and the killed writer's temp ...
    assert leftovers[0].startswith(".shard-0.parquet.") and leftovers[0].endswith(".tmp")
    assert [p.name for p in list_parquet(UPath(store))] == ["shard-0.parquet"]  # ... which nobody lists


@pytest.mark.slow
def test_concurrent_writers_and_a_reader_never_see_a_torn_file(store):
    out = UPath(store) / "t.parquet"
    n = 20_000
    write_parquet(table("start", n), out)
    writers = [child("rewrite", str(out), tag, str(n), "12") for tag in ("a", "b")]
    reads = 0
    while any(w.poll() is None for w in writers):
        whole_from_one_writer(read_parquet(out), n)  # every read is one writer's complete file
        reads += 1
    for w in writers:
        assert w.returncode == 0 and w.stdout.read() == "done\n", w.stderr.read()
    assert whole_from_one_writer(read_parquet(out), n) in {"a", "b"} and reads > 0
    assert [p.name for p in store.iterdir()] == ["t.parquet"]  # no temp left by a finished writer


def test_error_mid_stream_keeps_the_previous_file(store):
    out = UPath(store) / "rejects" / "s.parquet"
    write_parquet(table("old", 10), out)
    with pytest.raises(RuntimeError, match="source broke"):
        with ParquetStreamWriter(out, SCHEMA) as w:
            w.write(rows("new", 500))
            raise RuntimeError("source broke")
    assert whole_from_one_writer(read_parquet(out), 10) == "old"
    assert [p.name for p in (store / "rejects").iterdir()] == ["s.parquet"]
    with ParquetStreamWriter(out, SCHEMA):  # no rows: the file still exists, with the schema
        pass
    assert read_parquet(out).num_rows == 0 and read_parquet(out).schema == SCHEMA


def test_stale_temps_of_killed_writers_are_swept(store):
    old, fresh, other = store / ".a.parquet.0f.tmp", store / ".a.parquet.1e.tmp", store / ".b.parquet.2d.tmp"
    for p in (old, fresh, other):
        p.write_bytes(b"PAR1 cut short")
    long_ago = time.time() - STALE_TEMP_S - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    assert list_parquet(UPath(store)) == []
    write_parquet(table("x", 3), UPath(store) / "a.parquet")
    # only this name's temps, only old ones: a fresh temp may be a live writer's
    assert sorted(p.name for p in store.iterdir()) == [".a.parquet.1e.tmp", ".b.parquet.2d.tmp", "a.parquet"]


@pytest.fixture
def s3(s3_server, s3_bucket):
    name, client = s3_bucket
    opts = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_server}}
    return name, client, opts


@pytest.mark.parametrize("n_rows", [500, 200_000], ids=["single-put", "multipart"])
def test_s3_error_mid_stream_keeps_the_previous_object(s3, n_rows):
    name, client, opts = s3
    out = UPath(f"s3://{name}/store/rejects/s.parquet", default_block_size=5 * 2**20, **opts)
    write_parquet(table("old", 10), out)
    with pytest.raises(RuntimeError, match="source broke"):
        with ParquetStreamWriter(out, SCHEMA) as w:
            w.write(rows("new", n_rows))
            uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
            assert len(uploads) == (n_rows > 500)  # past the block size, parts are already uploaded
            raise RuntimeError("source broke")
    assert whole_from_one_writer(read_parquet(out), 10) == "old"
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []  # aborted, not completed
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]]
    assert keys == ["store/rejects/s.parquet"]


def test_s3_streamed_file_is_published_on_close(s3):
    name, _, opts = s3
    out = UPath(f"s3://{name}/store/big.parquet", default_block_size=5 * 2**20, **opts)
    with ParquetStreamWriter(out, SCHEMA) as w:
        for start in range(0, 200_000, 50_000):
            w.write(rows("new", 50_000, start))
    assert whole_from_one_writer(pq.read_table(out.open("rb")), 200_000) == "new"


def test_s3_kill_mid_multipart_upload_keeps_the_previous_object(s3):
    name, client, opts = s3
    out = UPath(f"s3://{name}/store/s.parquet", **opts)
    write_parquet(table("old", 10), out)
    kill_mid_write(f"s3://{name}/store/s.parquet", 200_000, {**opts, "default_block_size": 5 * 2**20})
    assert whole_from_one_writer(read_parquet(out), 10) == "old"
    assert [o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]] == ["store/s.parquet"]
    # the killed writer's parts sit in an upload nobody completes (a bucket lifecycle rule aborts those)
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=name)["Uploads"]] == ["store/s.parquet"]
