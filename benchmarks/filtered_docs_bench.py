"""filtered_docs throughput and peak memory against the floor, in the same run.

The floor is the least any implementation must do: read the same parquet with pyarrow in batches
and batch-tokenize the same document texts with the same tokenizer. Ours additionally parses and
validates every record, strips markers, draws the seeded sample and streams rejects to parquet.
Each measurement runs in a fresh subprocess so that its peak RSS is its own.

    python benchmarks/filtered_docs_bench.py [--docs 100000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"


def make_shard(n_docs: int) -> Path:
    from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample

    out = DATA / f"shard-{n_docs}"
    if not (out / "shards" / "sample-00000.parquet").exists():
        write_sample(out, SampleSpec(shards=1, docs_per_shard=n_docs, seed=1, draw_images=False,
                                     image_base_url="https://images.example/"))
    return out / "shards" / "sample-00000.parquet"


def make_tokenizer() -> Path:
    from viscon_dagster.demo.tiny_tokenizer import save_pretrained_tokenizer

    path = DATA / "tokenizer"
    if not (path / "tokenizer.json").exists():
        save_pretrained_tokenizer(path)
    return path


def run_floor(shard: str, tokenizer: str, batch_size: int) -> int:
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer).backend_tokenizer  # the fastest path of the same tokenizer
    n = 0
    for batch in pq.ParquetFile(shard).iter_batches(batch_size=batch_size, columns=["texts"]):
        texts = ["\n\n".join(t for t in doc if t is not None) for doc in batch.column("texts").to_pylist()]
        tok.encode_batch_fast(texts, add_special_tokens=False)
        n += len(texts)
    return n


def run_ours(shard: str, tokenizer: str, batch_size: int) -> int:
    from upath import UPath

    from viscon_dagster.core.documents.filtering import REJECTS_SCHEMA, FilterSettings, filter_shard
    from viscon_dagster.core.files.parquet import ParquetStreamWriter
    from viscon_dagster.core.shards.sources import iter_record_batches
    from viscon_dagster.resources.tokenizer import TokenizerResource

    tok = TokenizerResource(name_or_path=tokenizer)
    with ParquetStreamWriter(UPath(DATA / "rejects.parquet"), REJECTS_SCHEMA) as rejects:
        _, stats = filter_shard(iter_record_batches(Path(shard).as_uri(), batch_size=batch_size), "bench",
                                FilterSettings(), tok.count_tokens, rejects.write)
    return stats.rows_in


def child(mode: str, shard: str, tokenizer: str, batch_size: int) -> None:
    start = time.perf_counter()
    n = (run_floor if mode == "floor" else run_ours)(shard, tokenizer, batch_size)
    elapsed = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"mode": mode, "docs": n, "seconds": elapsed, "cpu_seconds": cpu.ru_utime + cpu.ru_stime,
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own high-water RSS (VmHWM). Not ru_maxrss: that keeps the forking parent's peak
    across exec, so every child would report the parent's footprint."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(mode: str, shard: Path, tokenizer: Path, batch_size: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(shard), str(tokenizer), str(batch_size)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--child", nargs=4)
    args = p.parse_args()
    if args.child:
        mode, shard, tokenizer, batch_size = args.child
        return child(mode, shard, tokenizer, int(batch_size))

    DATA.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    rows = []
    for n_docs in (args.docs, 2 * args.docs):
        shard = make_shard(n_docs)
        for _ in range(args.repeat):
            floor = measure("floor", shard, tokenizer, args.batch_size)
            ours = measure("ours", shard, tokenizer, args.batch_size)
            rows.append((n_docs, floor, ours))
    print("| docs in shard | floor docs/s | filtered_docs docs/s | time ratio (ours/floor) "
          "| floor peak RSS MB | ours peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for n_docs, floor, ours in rows:
        print(f"| {n_docs:,} | {floor['docs'] / floor['seconds']:,.0f} | {ours['docs'] / ours['seconds']:,.0f} | "
              f"{ours['seconds'] / floor['seconds']:.2f} | {floor['peak_rss_mb']:.0f} | {ours['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
