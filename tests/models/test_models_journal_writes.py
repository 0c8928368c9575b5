"""Answers reach the journal before anything else waits on them: journal writes do not queue behind the
image reads of the requests in flight (which run on the default thread pool)."""

import os
import threading
import time

from tests.models.conftest import png_bytes
from viscon_dagster.core.models.journal import Journal
from viscon_dagster.core.models.request import ImageRef, Request
from viscon_dagster.resources.models import OpenAIHTTPBackend


def test_an_answer_is_journaled_while_every_pool_thread_waits_on_an_image_read(double, storage_root, tmp_path):
    # each image is a FIFO: its read blocks, holding a default-pool thread, until the test writes the bytes;
    # there are more of them than the default pool has threads (at most 32), so the pool is saturated
    n = 40
    fifos = [tmp_path / f"slow-{i}.png" for i in range(n)]
    for p in fifos:
        os.mkfifo(p)
    reqs = [Request.user("no image: answered at once")]
    reqs += [Request.user(f"image {i}", [ImageRef(url=p.as_uri(), sha256=f"{i:064x}", mime="image/png")])
             for i, p in enumerate(fifos)]
    journal_dir = storage_root / "j"
    seen = {}

    def release_reads_once_journaled():
        deadline = time.monotonic() + 30  # only a guard against waiting forever when the write is stuck
        while time.monotonic() < deadline and not seen.get("journaled"):
            seen["journaled"] = len(Journal(journal_dir).load()) > 0
            time.sleep(0.02)
        seen["reads_done_when_journaled"] = double.calls - 1  # image requests cannot be sent before their read
        data = png_bytes()
        for p in fifos:
            threading.Thread(target=lambda p=p: p.write_bytes(data), daemon=True).start()

    releaser = threading.Thread(target=release_reads_once_journaled, daemon=True)
    releaser.start()
    out = OpenAIHTTPBackend(model="m", base_url=double.base_url, api_key="k", max_concurrency=n + 1).generate(
        reqs, journal_dir=journal_dir)
    releaser.join()
    assert seen["journaled"] and seen["reads_done_when_journaled"] == 0
    assert [r.status for r in out] == ["ok"] * (n + 1)
    assert len(Journal(journal_dir).load()) == n + 1
