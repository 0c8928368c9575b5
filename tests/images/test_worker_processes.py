"""Worker processes that fetch and decode their own URLs (`cpu_pool="process"`): the same rows as in threads, the
politeness bounds held across workers, failures raised clearly, nothing left running."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import psutil
import pytest
from upath import UPath

from tests.images.test_fault_routes import EXPECTED, RAW_EXPECTED
from viscon_dagster.core.images import ImageRequest, ImageSettings, ImageStorageError, afetch_images, fetch_images
from viscon_dagster.core.images.worker import plan_workers


def reqs(urls):
    return [ImageRequest(f"d{i}", f"https://example.org/d{i}", i, u) for i, u in enumerate(urls)]


def in_workers(settings: ImageSettings, **changes) -> ImageSettings:
    return dataclasses.replace(settings, cpu_pool="process", cpu_workers=2, **changes)


def image_workers() -> list[psutil.Process]:
    """The running image workers of this process: the children of its forkserver."""
    servers = [c for c in psutil.Process().children() if "forkserver" in " ".join(c.cmdline())]
    return [w for fs in servers for w in fs.children() if w.status() != psutil.STATUS_ZOMBIE]


def test_the_plan_divides_the_bounds_among_workers():
    s = ImageSettings(concurrency=64, per_host_concurrency=8, io_workers=16)
    urls = [f"http://h{i % 3}.example/{i}.jpg" for i in range(30)]
    plan = plan_workers(urls, s, 4)
    assert plan.workers == 4 and plan.shared and list(plan.queue(3)) == urls  # any host to whichever is free
    each = plan.settings
    assert each.concurrency * 4 <= 64 and each.per_host_concurrency * 4 <= 8 and each.cpu_workers == 1
    # a per-host bound that cannot be divided: each host's URLs go to one worker, with the whole bound
    for narrow in (dataclasses.replace(s, per_host_concurrency=2), dataclasses.replace(s, per_host_rps=3.0)):
        plan = plan_workers(urls, narrow, 4)
        assert not plan.shared and sorted(u for q in plan.queues for u in q) == sorted(urls)
        hosts = [{u.split("/")[2] for u in q} for q in plan.queues]
        assert sum(len(h) for h in hosts) == 3  # no host in two workers
        assert plan.settings.per_host_concurrency == narrow.per_host_concurrency
    assert plan_workers(urls[:1], s, 4).workers == 1  # never more workers than URLs


def test_fault_routes_end_the_same_in_worker_processes(server, settings, tmp_path):
    """Every fault route of the loopback server, fetched and decoded in two worker processes, ends as it does in
    threads (`test_fault_routes.py`)."""
    s = ImageSettings(
        allowed_hosts=("127.0.0.1",), retries=1, retry_backoff_s=0.05, connect_timeout_s=1, read_timeout_s=0.5,
        total_timeout_s=2, max_bytes=1024 * 1024, max_retry_after_s=5, max_redirects=5)
    urls = [server.url(p) for p in EXPECTED] + [server.raw_base + p for p in RAW_EXPECTED]
    requests = [ImageRequest(f"doc{i // 20}", "https://example.org/page", i, u, "alt") for i, u in enumerate(urls)]
    server.reset()
    procs = fetch_images(requests, UPath(tmp_path), in_workers(s), shard="matrix")
    for want, got in zip([*EXPECTED.values(), *RAW_EXPECTED.values()], procs.table.column("status").to_pylist(),
                         strict=True):
        assert got in ((want,) if isinstance(want, str) else want)
    assert procs.urls_fetched == len(set(urls)) and procs.requests_made > len(urls)  # retries, redirects, robots
    assert server.hits["/private/p24.jpg"] == 0  # robots.txt held in every worker
    stored = [p for p in procs.table.column("path").to_pylist() if p]
    assert stored and all((tmp_path / p).is_file() for p in stored)


def test_per_host_bound_holds_across_workers(server, settings, tmp_path):
    for bound in (2, 1):  # 2: one slot per worker; 1: the host is one worker's
        server.reset()
        urls = [server.url(f"/sleep/150/b{bound}-{i}") for i in range(8)]
        s = in_workers(settings, per_host_concurrency=bound, near_duplicate_distance=-1)
        result = fetch_images(reqs(urls), UPath(tmp_path / str(bound)), s)
        assert result.status_counts == {"ok": 1, "duplicate": 7}
        assert server.max_active == bound


def test_per_host_requests_per_second_across_workers(server, settings, tmp_path):
    server.reset()
    urls = [server.url(f"/sleep/0/w{i}") for i in range(5)]
    fetch_images(reqs(urls), UPath(tmp_path), in_workers(settings, per_host_rps=5, respect_robots_txt=False))
    times = sorted(server.times[f"/sleep/0/w{i}"][0] for i in range(5))
    assert times[-1] - times[0] >= 0.6  # 5 requests at 5/s in all, not 5/s per worker


def test_storage_failure_in_a_worker_fails_the_shard_clearly(server, settings, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ImageStorageError, match="cannot write images .* a rerun resumes from the journal"):
        fetch_images(reqs([server.url(f"/img/p2{i}.jpg") for i in range(4)]), UPath(blocker), in_workers(settings))


@pytest.mark.slow
def test_a_killed_worker_fails_the_shard_and_keeps_what_was_done(server, settings, tmp_path):
    server.reset()
    store = UPath(tmp_path)
    fast = [server.url(f"/sleep/0/k{i}") for i in range(4)]
    slow = [server.url(f"/sleep/3000/ks{i}") for i in range(4)]
    mixed = [u for pair in zip(fast, slow) for u in pair]  # each worker gets fast and slow ones
    s = in_workers(settings, read_timeout_s=5, total_timeout_s=10, journal_flush_rows=1)
    errors: list[BaseException] = []

    def run():
        try:
            fetch_images(reqs(mixed), store, s, shard="killed")
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(server.hits[f"/sleep/0/k{i}"] for i in range(4)):
        time.sleep(0.05)
    time.sleep(0.6)  # the fast rows reach the parent (sent at least every 0.5 s)
    workers = image_workers()
    assert len(workers) == 2, workers
    workers[0].kill()
    thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "image worker process died" in str(errors[0])
    assert not image_workers()  # the other worker is stopped too
    again = fetch_images(reqs(mixed), store, dataclasses.replace(s, cpu_pool="thread"), shard="killed")
    assert again.urls_resumed >= 4 and all(server.hits[f"/sleep/0/k{i}"] == 1 for i in range(4))


@pytest.mark.slow
def test_a_cancelled_run_stops_its_workers_and_journals_what_they_finished(server, settings, tmp_path):
    server.reset()
    store = UPath(tmp_path)
    fast = [server.url(f"/sleep/0/c{i}") for i in range(4)]
    slow = [server.url(f"/sleep/4000/cs{i}") for i in range(2)]
    s = in_workers(settings, read_timeout_s=5, total_timeout_s=10)
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(afetch_images(reqs(fast + slow), store, s, shard="cut"), 2.0))
    assert not image_workers()
    result = fetch_images(reqs(fast + slow), store, dataclasses.replace(s, cpu_pool="thread"), shard="cut")
    assert result.urls_resumed == 4 and all(server.hits[f"/sleep/0/c{i}"] == 1 for i in range(4))
