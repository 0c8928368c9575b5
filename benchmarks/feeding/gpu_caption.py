"""Captions on one GPU through the pipeline's own backend, fed by its own feeding code (prepared for a GPU machine;
nothing is downloaded: a random-weight Idefics3 of SmolVLM-256M's shape, the locally built tokenizer).

    python benchmarks/feeding/gpu_caption.py [--requests 2048] [--batch 256] [--image-px 512] [--out-tokens 150]

The fastest engine present: vLLM offline (`VLLMOfflineBackend`) when `import vllm` works, else transformers'
batched `generate` on CUDA (`TransformersLocalBackend`, bf16). The requests are the `captions` asset's: a page
context of ~1,500 tokens around each image (benchmarks/feeding/feed.py's corpus), the image stored as the images
stage stores it (1024 px, quality 90), processed at `--image-px` without tiling (SmolVLM's 512-px tile: 64 image
tokens). Answers run to `--out-tokens` (random weights rarely end early; the mean is printed). Prints images/s,
output tokens/s, the GPU's mean utilisation (nvidia-smi, every 0.2 s while generating), this process's CPU per
request, and the decode-bound ceiling the issue quotes (~300 images/s for SmolVLM-256M at ~150 output tokens).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "benchmarks" / "training"))


class GpuSampler:
    """The GPU's utilisation (%) every `every_s` seconds from nvidia-smi, while it runs."""

    def __init__(self, every_s: float = 0.2):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))
            self._stop.wait(every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> int:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--image-px", type=int, default=512)
    ap.add_argument("--out-tokens", type=int, default=150)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself (tiny sizes), no GPU")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark is for a GPU machine (--device cpu: a dry run)", file=sys.stderr)
        return 2

    from feed import make_corpus
    from gpu_smolvlm_sized import build
    from upath import UPath

    from viscon_dagster.core.chain.captions import caption_jobs, caption_request
    from viscon_dagster.core.files.parquet import read_parquet
    from viscon_dagster.core.models.request import ImageRef, SamplingParams
    from viscon_dagster.resources.tokenizer import TokenizerResource

    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-caption-"))
    try:
        base = build(tmp / "smolvlm-256m-sized", a.image_px)
        corpus = make_corpus(tmp / "corpus", a.requests, 64, 1)
        tokenizer = TokenizerResource(name_or_path=corpus["tokenizer"])
        count = lambda text: tokenizer.count_tokens([text])[0]  # noqa: E731
        docs = read_parquet(UPath(tmp / "corpus" / "docs" / "feed-00.parquet"))
        images = read_parquet(UPath(tmp / "corpus" / "images" / "feed-00.parquet"))
        store = UPath(corpus["store"])
        params = SamplingParams(max_tokens=a.out_tokens)
        jobs = caption_jobs(docs, images, "gpu", True, 1500, count)
        requests = [caption_request(j, ImageRef(url=str(store / j.image_path), sha256=j.image_sha256,
                                                mime="image/jpeg"), params) for j in jobs]
        try:
            if a.device != "cuda":
                raise ImportError("vLLM is for the GPU run")
            import vllm

            from viscon_dagster.resources.models import VLLMOfflineBackend

            backend = VLLMOfflineBackend(model=str(base), model_label="smolvlm-256m-sized", dtype="bfloat16",
                                         batch_size=a.batch, max_model_len=4096, gpu_memory_utilization=0.85)
            engine = f"vLLM offline {vllm.__version__}"
        except ImportError:
            from viscon_dagster.resources.models import TransformersLocalBackend

            backend = TransformersLocalBackend(model=str(base), model_label="smolvlm-256m-sized", device=a.device,
                                               dtype="bfloat16" if a.device == "cuda" else "float32",
                                               batch_size=a.batch)
            engine = "transformers generate (vLLM not installed)"
        warm = backend.generate(requests[: min(len(requests), a.batch)])  # load the engine, compile, warm up
        assert sum(r.ok for r in warm) == len(warm), next(r.error for r in warm if not r.ok)
        cpu0, t0 = time.process_time(), time.perf_counter()
        with GpuSampler() if a.device == "cuda" else contextlib.nullcontext(GpuSampler()) as gpu:
            responses = backend.generate(requests, journal_dir=store / "captions" / "_journal" / "gpu")
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        ok = [r for r in responses if r.ok]
        out_tokens = sum(r.usage.completion_tokens for r in ok)
        print(json.dumps({
            "gpu": torch.cuda.get_device_name(0) if a.device == "cuda" else "none (dry run on CPU)",
            "engine": engine, "requests": len(requests), "ok": len(ok),
            "batch": a.batch, "image_px": a.image_px,
            "mean_prompt_tokens": round(statistics.mean(r.usage.prompt_tokens for r in ok), 1),
            "mean_output_tokens": round(out_tokens / max(1, len(ok)), 1),
            "images_per_s": round(len(ok) / wall, 1), "output_tokens_per_s": round(out_tokens / wall),
            "gpu_util_mean_pct": round(statistics.mean(gpu.samples), 1) if gpu.samples else None,
            "gpu_util_samples": len(gpu.samples), "cpu_ms_per_request_this_process": round(cpu * 1000 / len(requests),
                                                                                            1),
            "wall_s": round(wall, 1),
            "ceiling": "~300 images/s decode-bound for SmolVLM-256M at ~150 output tokens (issue 28's arithmetic)",
        }, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
