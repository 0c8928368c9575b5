"""Dagster's overhead per partition: a backfill of `filtered_docs` over N small shards, one shard per run and
`BackfillPolicy.multi_run(k)`, against a plain Python loop calling the same function on the same shards.

    .venv/bin/python benchmarks/dagster_overhead.py [--shards 100] [--docs 8] [--k 50]

Each backfill goes through the route `viscon backfill` uses (GraphQL launchPartitionBackfill, a real
`dagster-daemon`, the instance config `viscon` writes: at most 4 runs at once), timed from submission until
every partition is materialized. The loop calls `assets/docs.filter_one_shard` (the asset's body: read, filter,
rejects, the great-expectations check) and publishes the table as the asset does. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def plain_loop(storage, tokenizer, keys) -> float:
    from viscon_dagster.assets.docs import FILTERED_DOCS, FilteredDocsConfig, filter_one_shard
    from viscon_dagster.core.files.parquet import write_parquet

    config = FilteredDocsConfig()
    started = time.perf_counter()
    for key in keys:
        out = filter_one_shard(storage, tokenizer, config, key)
        write_parquet(out.table, storage.partition_path(FILTERED_DOCS, key))
    return time.perf_counter() - started


def dagster_backfill(work: Path, keys: list[str], per_run: int) -> tuple[float, int]:
    import dagster as dg

    from viscon_dagster.local.backfills import submit_backfill, wait_for_backfill
    from viscon_dagster.local.daemon import running_daemon
    from viscon_dagster.local.instance import default_instance_yaml
    from viscon_dagster.local.workspace import file_workspace

    home = work / f"home-{per_run}"
    home.mkdir()
    (home / "dagster.yaml").write_text(default_instance_yaml() + "telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ["VISCON_PARTITIONS_PER_RUN"] = str(per_run)
    defs_file = work / "defs.py"
    defs_file.write_text("from viscon_dagster.definitions import build_definitions\ndefs = build_definitions()\n")
    folder = work / f"ws-{per_run}"
    folder.mkdir()
    workspace = file_workspace(defs_file, folder)
    key = dg.AssetKey("filtered_docs")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("obelics_shards", keys)
        with running_daemon(instance, workspace, log=folder / "daemon.log"):
            time.sleep(20)  # the daemon up and its code server loaded: timed from submission on
            started = time.perf_counter()
            backfill_id = submit_backfill(instance, workspace, {key: keys},
                                          run_config={"execution": {"config": {"in_process": {}}}})
            ok = wait_for_backfill(instance, backfill_id, {key: keys}, 0, on_progress=lambda _: None,
                                   timeout_s=3600, poll_s=0.5)
            elapsed = time.perf_counter() - started
        assert ok, f"backfill {backfill_id} failed: see {folder / 'daemon.log'}"
        runs = len(instance.get_runs())
    return elapsed, runs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shards", type=int, default=100)
    p.add_argument("--docs", type=int, default=8)
    p.add_argument("--k", type=int, default=50, help="shards per run with batching")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dagster_overhead_"))
    os.environ["VISCON_STORAGE_ROOT"] = str(work / "store")

    from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample
    from viscon_dagster.demo.tiny_tokenizer import save_pretrained_tokenizer

    save_pretrained_tokenizer(work / "tokenizer")
    os.environ["VISCON_TOKENIZER"] = str(work / "tokenizer")
    write_sample(work / "sample", SampleSpec(shards=args.shards, docs_per_shard=args.docs, draw_images=False))

    import dagster as dg

    from viscon_dagster.definitions import defs
    from viscon_dagster.resources.shard_source import record_shards

    with dg.build_resources({"storage": defs.resources["storage"], "tokenizer": defs.resources["tokenizer"]}) as r:
        keys = record_shards(r.storage, str(work / "sample" / "shards"))
        plain_loop(r.storage, r.tokenizer, keys[:2])  # warm: imports, tokenizer, great-expectations
        loop_s = plain_loop(r.storage, r.tokenizer, keys)
    results = [("plain Python loop (same function)", loop_s, 0)]
    for per_run in (1, args.k):
        elapsed, runs = dagster_backfill(work, keys, per_run)
        results.append((f"backfill, {per_run} shard(s) per run", elapsed, runs))
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"\n{len(keys)} shards of {args.docs} documents; {load}\n")
    print("| variant | runs | wall s | overhead s/partition | × loop |\n|---|---|---|---|---|")
    for name, seconds, runs in results:
        print(f"| {name} | {runs or '-'} | {seconds:.1f} | {(seconds - loop_s) / len(keys):.3f} | "
              f"{seconds / loop_s:.2f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
