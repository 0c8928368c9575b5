"""Pay once: a run killed with SIGKILL mid-way is resumed without re-asking anything already answered."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import Request, Response

CHILD = Path(__file__).with_name("journal_child.py")
REPO = Path(__file__).resolve().parents[2]


def run_child(double, journal_url, n):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, str(CHILD), double.base_url, journal_url, str(n)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_mid_partition_then_rerun_pays_only_for_the_rest(double, storage_root):
    n = 60
    double.latency_s = 0.05
    journal_dir = storage_root / "captions" / "_journal" / "shard-0"
    child = run_child(double, str(journal_dir), n)
    deadline = time.time() + 60
    while double.calls < 20 and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    answered_before = double.calls
    journaled = len(Journal(journal_dir).load())
    assert 0 < journaled < n
    # lost at most: requests in flight (4) and answers received but not yet written (a group write)
    assert journaled >= answered_before - 2 * 4

    double.calls = 0
    rerun = run_child(double, str(journal_dir), n)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert double.calls == n - journaled  # nothing already answered is asked again
    assert out.split() == ["sent", str(n - journaled), "journaled", str(journaled)]

    double.calls = 0
    third = run_child(double, str(journal_dir), n)
    third.communicate(timeout=120)
    assert double.calls == 0


@pytest.fixture
def s3_root():
    moto_server = pytest.importorskip("moto.server")
    import boto3
    from upath import UPath

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    creds = dict(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    boto3.client("s3", endpoint_url=endpoint, **creds).create_bucket(Bucket="viscon")
    yield UPath("s3://viscon/run", key="test", secret="test",
                client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    server.stop()


def test_journal_on_s3(s3_root, double):
    from viscon_dagster.resources.models import OpenAIHTTPBackend

    b = OpenAIHTTPBackend(model="m", base_url=double.base_url, api_key="k")
    reqs = [Request.user(f"s3 {i}") for i in range(6)]
    b.generate(reqs[:3], journal_dir=s3_root / "journal")
    assert double.calls == 3
    out = b.generate(reqs, journal_dir=s3_root / "journal")
    assert double.calls == 6 and [r.cached for r in out] == [True] * 3 + [False] * 3
    j = Journal(s3_root / "journal")
    j.put(Response(fingerprint="x", model="m", backend="b", status="ok"))
    assert len(Journal(s3_root / "journal").load()) == 7


def test_images_from_s3_travel_as_data_urls(s3_root, double):
    import hashlib

    from tests.models.conftest import png_bytes
    from viscon_dagster.core.models.request import ImageRef
    from viscon_dagster.resources.models import OpenAIHTTPBackend

    data = png_bytes("green")
    p = s3_root / "images" / "g.png"
    p.write_bytes(data)
    ref = ImageRef.from_path(p)
    assert ref.url.startswith("s3://") and ref.sha256 == hashlib.sha256(data).hexdigest()
    out = OpenAIHTTPBackend(model="m", base_url=double.base_url, api_key="k").generate([Request.user("x", [ref])])
    assert out[0].ok
    import base64
    url = double.log[0]["messages"][0]["content"][0]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == data
