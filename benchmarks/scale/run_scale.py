"""A 1,000-shard backfill on PostgreSQL, simulated on one machine: small shards registered on an instance
built from deploy/dagster.yaml, a backfill of the CPU stages (filtered_docs, images) launched through the
webserver's GraphQL API and run by a real dagster-daemon under the assets' BackfillPolicy.multi_run.

    .venv/bin/python -m benchmarks.scale.run_scale --shards 1000 --per-run 100 --concurrent-runs 2

Measures: partitions per minute (backfill wall time), overhead per partition (run wall time not spent in
steps), the GraphQL latency of an asset's partition status, and the instance's size in PostgreSQL.
The only change to the template: `max_concurrent_runs` (this machine's cores, not a cluster's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

from tests.postgres.conftest import TEMPLATE, running_postgres
from tests.postgres.services import BIN, dagster_services, launch_asset_backfill, partition_status, wait_for_backfill
from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample
from viscon_dagster.demo.tiny_tokenizer import save_pretrained_tokenizer

CPU_STAGES = ["filtered_docs", "images"]


def instance_bytes(env: dict) -> int:
    import psycopg2

    with psycopg2.connect(host=env["DAGSTER_PG_HOST"], port=env["DAGSTER_PG_PORT"], user=env["DAGSTER_PG_USER"],
                          dbname=env["DAGSTER_PG_DB"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        return cur.fetchone()[0]


def step_seconds(instance: dg.DagsterInstance, run_ids: list[str]) -> float:
    total = 0.0
    for run_id in run_ids:
        for stats in instance.get_run_step_stats(run_id):
            if stats.start_time and stats.end_time:
                total += stats.end_time - stats.start_time
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=1000)
    ap.add_argument("--docs-per-shard", type=int, default=2)
    ap.add_argument("--per-run", type=int, default=100, help="VISCON_PARTITIONS_PER_RUN (BackfillPolicy.multi_run)")
    ap.add_argument("--concurrent-runs", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/scale/results.json")
    ap.add_argument("--no-backfill", action="store_true", help="register and query only (GraphQL, size)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: stop the services and the server too
    work = Path(tempfile.mkdtemp(prefix="viscon-scale-"))
    try:
        t0 = time.perf_counter()
        write_sample(work / "sample", SampleSpec(shards=args.shards, docs_per_shard=args.docs_per_shard, seed=3,
                                                 draw_images=not args.no_backfill))  # URLs only: nothing fetched
        save_pretrained_tokenizer(work / "tok")
        sample_s = time.perf_counter() - t0
        with running_postgres() as server:
            db = server.create_database()
            home = work / "home"
            home.mkdir()
            config = yaml.safe_load(TEMPLATE.read_text())
            config["concurrency"]["runs"]["max_concurrent_runs"] = args.concurrent_runs
            (home / "dagster.yaml").write_text(yaml.safe_dump(config))
            env = {**server.env(db), "DAGSTER_HOME": str(home), "VISCON_STORAGE_ROOT": (work / "store").as_uri(),
                   "VISCON_TOKENIZER": str(work / "tok"), "VISCON_IMAGE_FILE_ROOTS": str(work / "sample" / "images"),
                   "VISCON_PARTITIONS_PER_RUN": str(args.per_run)}
            os.environ.update(env)
            t0 = time.perf_counter()
            subprocess.run([str(BIN / "viscon"), "shards", "register", str(work / "sample" / "shards")],
                           check=True, capture_output=True, timeout=1800)
            register_s = time.perf_counter() - t0
            with dg.DagsterInstance.get() as instance:
                shards = sorted(instance.get_dynamic_partitions("obelics_shards"))
            assert len(shards) == args.shards, len(shards)
            size_registered = instance_bytes(env)
            with dagster_services(env, work, daemon=[str(BIN / "dagster-daemon")]) as url:  # its real 30-s loop
                before = []
                for _ in range(5):  # the status of `images` over every registered partition, none materialized
                    t1 = time.perf_counter()
                    partition_status(url, "images")
                    before.append(time.perf_counter() - t1)
                partial = {"shards": args.shards, "register_s": round(register_s, 1),
                           "instance_bytes_registered": size_registered,
                           "graphql_partition_status_before_s": round(statistics.median(before), 3),
                           "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
                Path(args.out).write_text(json.dumps(partial, indent=2) + "\n")  # kept if the backfill is cut short
                print(json.dumps(partial), flush=True)
                if args.no_backfill:
                    return
                t0 = time.perf_counter()
                backfill_id = launch_asset_backfill(url, CPU_STAGES, shards)
                backfill = wait_for_backfill(url, backfill_id, timeout_s=3 * 3600)
                wall_s = time.perf_counter() - t0
                latencies = []
                for _ in range(7):
                    t1 = time.perf_counter()
                    status = partition_status(url, "images")
                    latencies.append(time.perf_counter() - t1)
            with dg.DagsterInstance.get() as instance:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
                run_ids = [r.run_id for r in runs]
                stats = instance.get_run_stats
                run_wall = sum((stats(r).end_time or 0) - (stats(r).start_time or 0) for r in run_ids)
                in_steps = step_seconds(instance, run_ids)
                done = {a: len(instance.get_materialized_partitions(dg.AssetKey(a))) for a in CPU_STAGES}
            size_after = instance_bytes(env)
        result = {
            "shards": args.shards, "docs_per_shard": args.docs_per_shard, "partitions_per_run": args.per_run,
            "concurrent_runs": args.concurrent_runs, "backfill_status": backfill["status"], "runs": len(run_ids),
            "materialized": done, "sample_write_s": round(sample_s, 1), "register_s": round(register_s, 1),
            "backfill_wall_s": round(wall_s, 1), "partitions_per_min": round(args.shards / wall_s * 60, 1),
            "run_wall_s_total": round(run_wall, 1), "in_step_s_total": round(in_steps, 1),
            "overhead_s_per_partition": round((run_wall - in_steps) / args.shards, 3),
            "run_wall_s_per_partition": round(run_wall / args.shards, 3),
            "graphql_partition_status_s": {"median": round(statistics.median(latencies), 3),
                                           "max": round(max(latencies), 3)},
            "graphql_materialized_partitions": len(status["materializedPartitions"]),
            "graphql_partition_status_before_s": round(statistics.median(before), 3),
            "instance_bytes_registered": size_registered, "instance_bytes_after": size_after,
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
