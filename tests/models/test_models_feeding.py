"""The vLLM offline backend feeds its engine without making it wait: the next batch's images are read while the
engine generates the current one, and a batch's images are read in parallel. vLLM cannot run here; a stand-in
engine (`test_models_rejections.py`'s kind) sleeps through each batch as a process waiting on its GPU does."""

import threading
import time
from types import SimpleNamespace

from viscon_dagster.core.models.request import ImageRef, Request, SamplingParams
from viscon_dagster.resources.models import VLLMOfflineBackend

GEN_S = 0.4


class SleepingLLM:
    def __init__(self):
        self.calls: list[tuple[float, float]] = []

    def chat(self, conversations, params, use_tqdm=False):
        start = time.monotonic()
        time.sleep(GEN_S)
        self.calls.append((start, time.monotonic()))
        return [SimpleNamespace(prompt_token_ids=[0] * 8, outputs=[SimpleNamespace(
            text="A caption.", token_ids=[1, 2], finish_reason="stop")]) for _ in conversations]


class StandIn(VLLMOfflineBackend):
    def _sampling(self, req):
        return req.params


def test_the_next_batch_is_read_while_the_engine_generates(image_ref, storage_root, monkeypatch):
    reads: list[tuple[float, str, int]] = []  # (when, image url, thread)
    real_pil = ImageRef.pil

    def slow_pil(self):  # a read of ~50 ms, as a large stored JPEG from S3 takes
        time.sleep(0.05)
        reads.append((time.monotonic(), self.url, threading.get_ident()))
        return real_pil(self)

    monkeypatch.setattr(ImageRef, "pil", slow_pil)
    images = []
    for i in range(12):
        p = storage_root / "images" / f"{i}.png"
        p.write_bytes(image_ref.path().read_bytes())
        images.append(ImageRef.from_path(p, sha256=f"{i:064d}"))
    reqs = [Request.user(f"Caption image {i}.", [images[i]], params=SamplingParams(max_tokens=4)) for i in range(12)]
    backend = StandIn(model="stand-in", model_label="stand-in", batch_size=4)
    backend._llm = SleepingLLM()
    t0 = time.monotonic()
    out = backend.generate(reqs, journal_dir=storage_root / "j")
    wall = time.monotonic() - t0
    assert [r.status for r in out] == ["ok"] * 12
    calls = backend._llm.calls
    assert len(calls) == 3
    by_url = {url: when for when, url, _ in reads}
    for b in (1, 2):  # every image of batches 2 and 3 was read while the batch before it generated
        for i in range(4 * b, 4 * b + 4):
            assert calls[b - 1][0] <= by_url[images[i].url] <= calls[b - 1][1], (b, i)
    gaps = [later[0] - earlier[1] for earlier, later in zip(calls, calls[1:])]
    assert max(gaps) < 0.1  # the engine went from batch to batch without waiting for images
    assert len({thread for *_, thread in reads}) > 1  # a batch's images in parallel, not one after another
    # sequential reading would add 12 x 50 ms on top of 3 x 400 ms; overlapped, only the first batch's reads do
    assert wall < 3 * GEN_S + 12 * 0.05
