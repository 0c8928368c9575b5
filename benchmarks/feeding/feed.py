"""The CPU that feeds a GPU: everything the caption backends do per request outside generation, with the engine
replaced by one that answers at once.

    .venv/bin/python benchmarks/feeding/feed.py --requests 512 --processes 1,2           # vLLM offline + HTTP
    .venv/bin/python benchmarks/feeding/feed.py --requests 512 --processor smolvlm-256m  # + the model's processor
    .venv/bin/python benchmarks/feeding/feed.py --requests 512 --gen-ms 400 --engine vllm --batch 64  # overlap

Per request, as the `captions` asset does it: the page context rendered around the image and its tokens counted
with a fast tokenizer (`caption_jobs`), the request built and fingerprinted (`caption_request`), the backend's call
— the journal read, the image read from storage and decoded (vLLM offline: to a PIL image for the engine; HTTP:
read and base64-encoded into the JSON body, sent to a loopback server that answers at once), the answer parsed and
journaled — and the rows written (`caption_rows`, parquet). The engines answer a fixed ~150-token caption:

- **vllm**: `VLLMOfflineBackend` with `vllm.LLM` replaced by a stand-in whose `chat` returns at once (after
  `--gen-ms` per batch, asleep like a process waiting on its GPU); with `--processor smolvlm-256m` it first runs
  the Hugging Face image processor of SmolVLM-256M on every image (Idefics3: resized to a 2048-px long edge, cut
  into 512-px tiles plus a global view, rescaled and normalised) — the CPU work vLLM's front end does in the
  calling process before the GPU sees a request, timed on its own;
- **http**: `OpenAIHTTPBackend` against an aiohttp server in its own process (its CPU is not counted: it stands
  for `vllm serve`, which decodes and preprocesses the image on its side).

Stored images: `--images` distinct photo-like JPEGs at the size the `images` stage stores (long edge 1024, quality
90), shared round-robin by the pages. Each of `--processes` processes takes its share of the requests, all start
together; CPU is each process's own (all its threads), per phase; requests/s = requests / the slowest process's
wall time. `--processes 1` is what one asset process (one GPU's) can feed. Prints the machine (cores, load at the
start and end) and a markdown table; JSON to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing as mp
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from benchmarks.machine import describe  # noqa: E402

CAPTION_WORDS = 110  # ~150 tokens: a caption of the length the arithmetic assumes
# Hugging Face's HuggingFaceTB/SmolVLM-256M-Instruct preprocessor_config.json (Idefics3ImageProcessor), as published
SMOLVLM_256M = dict(do_convert_rgb=True, do_image_splitting=True, do_normalize=True, do_pad=True, do_rescale=True,
                    do_resize=True, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=1,
                    rescale_factor=1 / 255, size={"longest_edge": 2048}, max_image_size={"longest_edge": 512})


# ---------------------------------------------------------------------------------------------------- the corpus
def photo(seed: int, size: tuple[int, int]) -> bytes:
    """A photo-like JPEG as the images stage stores it: shapes on a gradient, with grain (so its size is a
    camera photo's, ~150-250 KB at 1024 px and quality 90)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    w, h = size
    im = Image.linear_gradient("L").resize(size).convert("RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(20, w // 2), y0 + rng.randrange(20, h // 2)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1),
                                                                 fill=tuple(rng.randrange(256) for _ in range(3)))
    im = im.filter(ImageFilter.GaussianBlur(2))
    grain = np.random.default_rng(seed).normal(0, 10, (h, w, 3))
    im = Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) + grain, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_corpus(work: Path, n_requests: int, n_images: int, processes: int) -> dict:
    """Stored images, one page per request (~2,000 words around one image), split into `processes` shards."""
    import hashlib

    import pyarrow as pa
    from upath import UPath

    from viscon_dagster.core.files.parquet import write_parquet
    from viscon_dagster.core.images import image_path
    from viscon_dagster.demo.sample_prose import corpus
    from viscon_dagster.demo.tiny_tokenizer import save_pretrained_tokenizer

    store = work / "store"
    shas = []
    for k in range(n_images):
        data = photo(k, (1024, 768) if k % 3 else (768, 1024))
        sha = hashlib.sha256(data).hexdigest()
        (store / image_path(sha)).parent.mkdir(parents=True, exist_ok=True)
        (store / image_path(sha)).write_bytes(data)
        shas.append(sha)
    paragraphs = corpus(400, seed=1)
    rng = random.Random(0)
    shards = {}
    for p in range(processes):
        docs, images = [], []
        for i in range(p, n_requests, processes):
            texts: list[str | None] = [" ".join(rng.sample(paragraphs, 3)) for _ in range(12)]
            texts.insert(6, None)  # the image, mid-page
            pics: list[str | None] = [None] * len(texts)
            pics[6] = f"https://example.org/img/{i}.jpg"
            sha = shas[i % n_images]
            docs.append({"doc_id": f"d{i}", "url": f"https://example.org/page/{i}", "texts": texts, "images": pics})
            images.append({"doc_id": f"d{i}", "position": 6, "image_url": pics[6], "alt_text": f"photo {i}",
                           "status": "ok", "sha256": sha, "path": image_path(sha)})
        shard = f"feed-{p:02d}"
        write_parquet(pa.Table.from_pylist(docs), UPath(work / "docs" / f"{shard}.parquet"))
        write_parquet(pa.Table.from_pylist(images), UPath(work / "images" / f"{shard}.parquet"))
        shards[shard] = len(docs)
    save_pretrained_tokenizer(work / "tokenizer")
    answer = " ".join(" ".join(paragraphs[:4]).split()[:CAPTION_WORDS])
    return {"store": str(store), "shards": shards, "tokenizer": str(work / "tokenizer"), "answer": answer}


# ---------------------------------------------------------------------------------------------------- the engines
class Clock:
    """CPU seconds spent inside the timed blocks: of this process (every thread), or with `thread=True` of the
    thread that runs the block only (for blocks that run in worker threads while other work goes on)."""

    def __init__(self, thread: bool = False):
        self.cpu, self.now = 0.0, time.thread_time if thread else time.process_time
        self._lock, self._t = threading.Lock(), threading.local()

    def __enter__(self):
        self._t.start = self.now()

    def __exit__(self, *exc):
        spent = self.now() - self._t.start
        with self._lock:
            self.cpu += spent

    def wrap(self, fn):
        def timed(*a, **kw):
            with self:
                return fn(*a, **kw)
        return timed


class StandInLLM:
    """Stands in for `vllm.LLM`: answers every conversation at once with the same caption (after `gen_s` per
    batch, asleep as a process waiting on its GPU), after the model's image processor when one is given."""

    def __init__(self, answer: str, gen_s: float, processor, clock: Clock):
        self.answer, self.gen_s, self.processor, self.clock = answer, gen_s, processor, clock
        self.calls: list[tuple[float, float]] = []  # (start, end) of each chat call, monotonic

    def chat(self, conversations, params, use_tqdm=False):
        start = time.monotonic()
        if self.processor is not None:
            with self.clock:
                for conv in conversations:
                    pics = [p["image_pil"] for m in conv if not isinstance(m["content"], str) for p in m["content"]
                            if p["type"] == "image_pil"]
                    self.processor(pics, return_tensors="np")
        if self.gen_s:
            time.sleep(self.gen_s)
        out = [SimpleNamespace(prompt_token_ids=[0] * 1600, outputs=[SimpleNamespace(
            text=self.answer, token_ids=[0] * 150, finish_reason="stop")]) for _ in conversations]
        self.calls.append((start, time.monotonic()))
        return out


def vllm_backend(answer: str, gen_s: float, processor, batch: int, clocks: dict):
    from viscon_dagster.resources.models import VLLMOfflineBackend

    class StandIn(VLLMOfflineBackend):
        def _sampling(self, req):  # vLLM's SamplingParams: the engine's, not the feeding's
            return req.params

    b = StandIn(model="smolvlm-256m-stand-in", model_label="smolvlm-256m-stand-in", batch_size=batch)
    b._llm = StandInLLM(answer, gen_s, processor, clocks["processor"])
    return b


def serve_answers(answer: str, port_file: str) -> None:
    """A loopback OpenAI-protocol server answering every chat completion at once (its own process)."""
    from aiohttp import web

    body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1600, "completion_tokens": 150, "total_tokens": 1750}})

    async def chat(request):
        await request.read()
        return web.Response(text=body, content_type="application/json")

    async def main():
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        await web.TCPSite(runner, "127.0.0.1", port).start()
        Path(port_file).write_text(str(port))
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------------------------------------------- one process
def feed(engine: str, corpus: dict, shard: str, work: str, gen_s: float, processor_name: str | None, batch: int,
         base_url: str | None, barrier) -> dict:
    """One process's share: build, call, write, each phase's CPU; waits at `barrier` so all start together."""
    import pyarrow as pa
    from upath import UPath

    from viscon_dagster.core.chain.captions import CAPTIONS_SCHEMA, caption_jobs, caption_request, caption_rows
    from viscon_dagster.core.files.parquet import read_parquet, write_parquet
    from viscon_dagster.core.models.request import ImageRef, SamplingParams
    from viscon_dagster.resources.models import OpenAIHTTPBackend
    from viscon_dagster.resources.tokenizer import TokenizerResource

    tokenizer = TokenizerResource(name_or_path=corpus["tokenizer"])
    tokenizer.load()
    clocks = {k: Clock(thread=k in ("read_decode", "processor"))
              for k in ("context_prompt", "backend", "read_decode", "processor", "rows")}
    # the image's way from storage into the request, wherever the backend does it (worker threads):
    # vLLM offline decodes it to PIL, HTTP base64-encodes its bytes into the body
    ImageRef.pil = clocks["read_decode"].wrap(ImageRef.pil)
    ImageRef.data_url = clocks["read_decode"].wrap(ImageRef.data_url)
    processor = None
    if processor_name == "smolvlm-256m":
        from transformers import Idefics3ImageProcessor

        processor = Idefics3ImageProcessor(**SMOLVLM_256M)
    if engine == "vllm":
        backend = vllm_backend(corpus["answer"], gen_s, processor, batch, clocks)
    else:
        backend = OpenAIHTTPBackend(model="m", model_label="smolvlm-256m-stand-in", base_url=base_url, api_key="x",
                                    max_concurrency=64)
    work_path = Path(work)
    store = UPath(corpus["store"])
    docs = read_parquet(UPath(work_path / "docs" / f"{shard}.parquet"))
    images = read_parquet(UPath(work_path / "images" / f"{shard}.parquet"))
    params = SamplingParams(max_tokens=384)
    barrier.wait()
    wall0 = time.perf_counter()
    with clocks["context_prompt"]:
        count = lambda text: tokenizer.count_tokens([text])[0]  # noqa: E731 - as the captions asset counts
        jobs = caption_jobs(docs, images, shard, True, 1500, count)
        requests = [caption_request(j, ImageRef(url=str(store / j.image_path), sha256=j.image_sha256,
                                                mime="image/jpeg"), params) for j in jobs]
    with clocks["backend"]:
        responses = backend.generate(requests, journal_dir=store / "captions" / "_journal" / f"{engine}-{shard}")
    with clocks["rows"]:
        table = pa.Table.from_pylist(caption_rows(jobs, responses, True), schema=CAPTIONS_SCHEMA)
        write_parquet(table, store / "captions" / f"{engine}-{shard}.parquet")
    wall = time.perf_counter() - wall0
    ok = sum(r.ok for r in responses)
    if ok != len(requests):
        raise SystemExit(f"{engine}: {len(requests) - ok} of {len(requests)} requests failed: "
                         f"{next(r.error for r in responses if not r.ok)}")
    calls = getattr(getattr(backend, "_llm", None), "calls", [])
    return {"requests": len(requests), "wall_s": wall, **{k: c.cpu for k, c in clocks.items()},
            "engine_calls": calls, "context_tokens": sum(j.context.tokens for j in jobs) / len(jobs)}


def run(engine: str, corpus: dict, work: Path, processes: int, gen_s: float, processor: str | None,
        batch: int) -> dict:
    shards = sorted(corpus["shards"])[:processes]
    ctx = mp.get_context("spawn")
    server = None
    base_url = None
    if engine == "http":
        port_file = work / "port"
        port_file.unlink(missing_ok=True)
        server = ctx.Process(target=serve_answers, args=(corpus["answer"], str(port_file)), daemon=True)
        server.start()
        deadline = time.monotonic() + 120
        while not (port_file.exists() and port_file.read_text()):
            if not server.is_alive() or time.monotonic() > deadline:
                raise SystemExit(f"the loopback answer server did not start (exit code {server.exitcode})")
            time.sleep(0.05)
        base_url = f"http://127.0.0.1:{port_file.read_text()}/v1"
    shutil.rmtree(Path(corpus["store"]) / "captions", ignore_errors=True)  # no answers journaled from before
    try:
        with ctx.Manager() as manager:
            barrier = manager.Barrier(len(shards))
            # not multiprocessing.Pool: a worker that dies (killed, out of memory) leaves its map waiting forever;
            # the executor raises BrokenProcessPool instead
            with ProcessPoolExecutor(len(shards), mp_context=ctx) as pool:
                parts = list(pool.map(feed, *zip(*[(engine, corpus, s, str(work), gen_s, processor, batch, base_url,
                                                     barrier) for s in shards])))
    finally:
        if server is not None:
            server.terminate()
    n = sum(p["requests"] for p in parts)
    per = {k: sum(p[k] for p in parts) * 1000 / n for k in ("context_prompt", "backend", "read_decode",
                                                          "processor", "rows")}
    ours = per["context_prompt"] + per["backend"] - per["processor"] + per["rows"]
    wall = max(p["wall_s"] for p in parts)
    return {"engine": engine, "processes": len(shards), "requests": n, "wall_s": wall, "requests_per_s": n / wall,
            "cpu_ms_per_request": ours, "phases_ms": per, "gen_s_per_batch": gen_s, "batch": batch,
            "engine_calls": parts[0]["engine_calls"], "context_tokens": parts[0]["context_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--images", type=int, default=64, help="distinct stored images")
    ap.add_argument("--engine", default="vllm,http")
    ap.add_argument("--processes", default="1", help="comma-separated process counts, e.g. 1,2")
    ap.add_argument("--processor", choices=["none", "smolvlm-256m"], default="none")
    ap.add_argument("--gen-ms", type=float, default=0.0, help="the stand-in vLLM engine's time per batch")
    ap.add_argument("--batch", type=int, default=256, help="vLLM offline batch_size")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "feeding" / "results.json"))
    ap.add_argument("--work", help="folder for the corpus (default: a temporary one, removed)")
    args = ap.parse_args()
    counts = [int(x) for x in args.processes.split(",")]
    load_start = os.getloadavg()
    print(f"start: {describe(load_start, None)}", file=sys.stderr)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="viscon-feed-"))
    try:
        t0 = time.perf_counter()
        corpus = make_corpus(work, args.requests, args.images, max(counts))
        print(f"corpus: {args.requests} pages, {args.images} images in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        results = []
        for engine in args.engine.split(","):
            for p in counts:
                # the corpus is cut into one shard per process of the largest count; fewer processes take as
                # many shards (fewer requests in all)
                r = run(engine, corpus, work, p, args.gen_ms / 1000, None if args.processor == "none"
                        else args.processor, args.batch)
                r["load_after"] = os.getloadavg()[0]
                results.append(r)
                print(f"{engine} x{r['processes']}: {r['cpu_ms_per_request']:.1f} CPU ms/request, "
                      f"{r['requests_per_s']:.1f} requests/s, load {r['load_after']:.1f}", file=sys.stderr)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    header = describe(load_start, os.getloadavg())
    lines = [header, "", "| engine | processes | requests | CPU ms / request (ours) | context + prompt | backend: "
             "image read + decode (vllm) or + base64 (http) | backend: the rest | rows | model's processor ms | "
             "requests/s | load after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        ph = r["phases_ms"]
        rest = ph["backend"] - ph["read_decode"] - ph["processor"]
        lines.append(f"| {r['engine']} | {r['processes']} | {r['requests']} | {r['cpu_ms_per_request']:.1f} | "
                     f"{ph['context_prompt']:.1f} | {ph['read_decode']:.1f} | {rest:.1f} | {ph['rows']:.1f} | "
                     f"{ph['processor']:.1f} | {r['requests_per_s']:.1f} | {r['load_after']:.1f} |")
    if args.gen_ms:
        for r in results:
            if r["engine"] != "vllm":
                continue
            calls = r["engine_calls"]
            gen_total = len(calls) * args.gen_ms / 1000
            gaps = [b[0] - a[1] for a, b in zip(calls, calls[1:], strict=False)]
            lines.append(f"\nvllm x{r['processes']}: {len(calls)} batches of {args.batch} at {args.gen_ms:.0f} ms "
                         f"each = {gen_total:.2f} s of generation; wall {r['wall_s']:.2f} s; the engine waited "
                         f"{sum(gaps):.2f} s between batches (max {max(gaps, default=0):.3f} s)")
    print("\n".join(lines))
    Path(args.out).write_text(json.dumps({"machine": header, "args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
