"""The demo's Q&A step with the tiny LM: the quote bias and batches of 64 against the old settings, same run.

    .venv/bin/python benchmarks/models/tiny_qa_bench.py --requests 128

Baseline: the tiny LM without `sequence_bias` in its generation_config, batches of 16 (the demo before).
Ours: the tiny LM as `viscon models tiny` builds it now (quote bias), batches of 64 (environment.py's default
for the tiny Q&A model). Same captions, same grammar, same sampling; figures are seconds per request and
tokens per answer, and the ratio baseline/ours.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from transformers import GenerationConfig

from viscon_dagster.core.chain.qa import qa_request
from viscon_dagster.core.models.request import SamplingParams
from viscon_dagster.demo.tiny_models import build_tiny_lm
from viscon_dagster.resources.models import TransformersLocalBackend

CAPTION = "A red tram crosses the old bridge in Lisbon at dusk, the river and the castle hill behind it. "


def run(model: Path, batch_size: int, n: int) -> dict:
    backend = TransformersLocalBackend(model=str(model), json_max_string_length=32, batch_size=batch_size)
    requests = [qa_request(f"Caption {i}. {CAPTION * 2}", 3, 2, SamplingParams(max_tokens=640, temperature=1.0))
                for i in range(n)]
    backend._load()  # loading is not what is measured
    started = time.perf_counter()
    answers = backend.generate(requests)
    wall = time.perf_counter() - started
    tokens = [a.usage.completion_tokens for a in answers]
    return {"s_per_request": wall / n, "tokens": sum(tokens) / n, "ok": sum(a.ok for a in answers) / n}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=128)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours = build_tiny_lm(Path(tmp) / "tiny-lm")
        baseline = Path(tmp) / "tiny-lm-unbiased"
        shutil.copytree(ours, baseline)
        config = GenerationConfig.from_pretrained(baseline)
        config.sequence_bias = None
        config.save_pretrained(baseline)
        before = run(baseline, 16, args.requests)
        after = run(ours, 64, args.requests)
    print(f"load {os.getloadavg()[0]:.1f}; {args.requests} requests")
    for name, r in (("baseline (no bias, batch 16)", before), ("ours (quote bias, batch 64)", after)):
        print(f"{name}: {r['s_per_request'] * 1000:.0f} ms/request, {r['tokens']:.0f} tokens/answer, "
              f"{r['ok']:.0%} parsed")
    print(f"speed-up: {before['s_per_request'] / after['s_per_request']:.2f}x")


if __name__ == "__main__":
    main()
