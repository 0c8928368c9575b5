"""Dagster's own cost as the shard count grows: registered shards (dynamic partitions) on SQLite and PostgreSQL.

    .venv/bin/python -m benchmarks.scale.many_partitions --sizes 1000,10000 --instances sqlite,postgres

For each instance kind and size, on a fresh instance (SQLite: the local dagster.yaml `viscon` writes; PostgreSQL:
a real server on loopback with deploy/dagster.yaml), in this process unless said:

- **register**: `instance.add_dynamic_partitions` of N new shard keys (what `viscon shards register` and the shard
  sensor hand Dagster), and with `--cli-register` the whole `viscon shards register SOURCE` in-process over N
  one-document shard files (listing, footer checks and our registry files included);
- **sensor tick**: the CPU automation sensor's tick as the daemon runs it, in this process: the sensor's evaluation
  (`evaluate_tick`, what its code server does) and the evaluations stored in the instance (what the daemon then
  does; the gRPC hop and the tick's own record are left out); the first tick, the next from its cursor (the steady
  tick every 30 s), and one more once every `filtered_docs` partition is materialized;
- **plan + submit 1,000**: `viscon backfill --select filtered_docs --partitions <1,000 shards>`'s two steps
  (`plan_backfill`, `submit_backfill` through GraphQL `launchPartitionBackfill`);
- **launch 1,000** (`--launch`): a real `dagster-daemon` (its backfill loop shortened to 3 s, tests/fast_daemon.py),
  started and beating before the submission, creates that backfill's runs (`multi_run(50)`: 20 runs), queued and
  held there (`max_concurrent_runs: 0`); timed from submission until every run exists (up to one loop of waiting);
- **partition status**: the GraphQL query the UI makes for one asset's partitions (`assetPartitionStatuses` of
  `images`), median of 5;
- **`--stale`, nothing stale**: `viscon backfill --select filtered_docs --stale`'s planning (the instance's
  per-partition staleness through GraphQL) with every partition of `filtered_docs` materialized at its current
  code version (materializations reported without runs beforehand, not timed).

Prints the machine (cores, load at the start and end) and a markdown table with each figure's growth from the
smallest size (×, against the size ratio); JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml

from benchmarks.machine import describe

REPO = Path(__file__).resolve().parents[2]
LAUNCH_PARTITIONS = 1000
PER_RUN = 50  # VISCON_PARTITIONS_PER_RUN's default

PARTITION_STATUS = """
query($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses { materializedPartitions failedPartitions materializingPartitions }
      }
    }
  }
}"""


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return time.perf_counter() - t0, result


class Postgres:
    """One PostgreSQL server on loopback for the whole run (started when first asked), a new database each time."""

    def __init__(self, stack: ExitStack):
        self.stack, self.server = stack, None

    def database_env(self) -> dict[str, str]:
        from tests.postgres.conftest import running_postgres

        if self.server is None:
            self.server = self.stack.enter_context(running_postgres())
        return self.server.env(self.server.create_database())


@contextmanager
def fresh_instance(kind: str, work: Path, pg: Postgres):
    """DAGSTER_HOME (and storage root) for one measurement: SQLite or a new PostgreSQL database."""
    from tests.postgres.conftest import TEMPLATE
    from viscon_dagster.local.instance import default_instance_yaml

    home = work / "dagster_home"
    home.mkdir(parents=True)
    if kind == "sqlite":
        config, env = yaml.safe_load(default_instance_yaml()), {}
    else:
        config, env = yaml.safe_load(TEMPLATE.read_text()), pg.database_env()
    config.setdefault("concurrency", {}).setdefault("runs", {})["max_concurrent_runs"] = 0  # runs stay queued
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env.update(DAGSTER_HOME=str(home), VISCON_STORAGE_ROOT=(work / "store").as_uri())
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            yield instance, env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def report_materialized(instance, key, partitions: list[str], code_version: str) -> None:
    """Materializations of `key`'s partitions at `code_version`, as a run records them, without a run."""
    import dagster as dg
    from dagster._core.definitions.data_version import CODE_VERSION_TAG, DATA_VERSION_TAG
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry

    events = []
    for p in partitions:
        m = dg.AssetMaterialization(key, partition=p, tags={CODE_VERSION_TAG: code_version,
                                                            DATA_VERSION_TAG: f"v-{p}"})
        events.append(EventLogEntry(
            error_info=None, level="debug", user_message="", run_id="", timestamp=time.time(),
            dagster_event=DagsterEvent(DagsterEventType.ASSET_MATERIALIZATION.value, "runless",
                                       event_specific_data=StepMaterializationData(m))))
    for k in range(0, len(events), 1000):
        instance.event_log_storage.store_event_batch(events[k:k + 1000])


def write_source(folder: Path, n: int) -> None:
    """N one-document shard files in the OBELICS format (the demo's sample writer, text only)."""
    from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample

    write_sample(folder, SampleSpec(shards=n, docs_per_shard=1, seed=5, draw_images=False))


def measure(kind: str, n: int, work: Path, pg: Postgres, args) -> dict:

    from viscon_dagster.definitions import chain_for_set, defs
    from viscon_dagster.local.backfills import BackfillRequest, plan_backfill, submit_backfill
    from viscon_dagster.local.workspace import PROJECT, graphql

    chain = chain_for_set("100k")
    pname = chain.spec.partitions_def.name
    keys = [f"shard-{i:06d}" for i in range(n)]
    out: dict = {"instance": kind, "shards": n}
    with fresh_instance(kind, work, pg) as (instance, env):
        instance.get_dynamic_partitions(pname)  # the first query of a new database is not the registration's
        if args.cli_register:
            from viscon_dagster.local.shards import register_source_shards

            source = work / "source"
            write_source(source, n)
            out["cli_register_s"], reg = timed(register_source_shards, str(source / "shards"), report=lambda _: None)
            assert len(reg.new) == n, len(reg.new)
            keys = sorted(instance.get_dynamic_partitions(pname))
            # the same again with nothing new: what every later registration (and shard sensor tick) pays
            out["cli_register_again_s"], _ = timed(register_source_shards, str(source / "shards"),
                                                   report=lambda _: None)
        else:
            out["register_s"], _ = timed(instance.add_dynamic_partitions, pname, keys)
        assert len(instance.get_dynamic_partitions(pname)) == n

        graph = defs.resolve_asset_graph()
        out["tick_first_s"], cursor = timed(tick, instance, defs, None, 1)
        out["tick_s"], cursor = timed(tick, instance, defs, cursor, 2)
        out["cursor_bytes"] = len(cursor or "")

        with graphql(instance, PROJECT) as run:
            times = []
            for _ in range(5):
                t, data = timed(run, PARTITION_STATUS, {"path": ["images"]})
                times.append(t)
            out["partition_status_s"] = statistics.median(times)

        some = keys[:min(LAUNCH_PARTITIONS, n)]
        req = BackfillRequest(names=["filtered_docs"], partitions=some)
        with ExitStack() as daemon:
            if args.launch:  # running and beating before the backfill is submitted
                from tests.fast_daemon import COMMAND
                from viscon_dagster.local.daemon import daemon_alive, running_daemon

                daemon.enter_context(running_daemon(instance, PROJECT, work / "daemon.log", command=COMMAND))
                deadline = time.monotonic() + 300
                while not daemon_alive(instance) and time.monotonic() < deadline:
                    time.sleep(0.5)
            out["plan_s"], todo = timed(plan_backfill, instance, PROJECT, chain, graph, req)
            out["submit_s"], backfill_id = timed(submit_backfill, instance, PROJECT, todo)
            out["backfill_partitions"] = len(some)
            if args.launch:
                out["launch_s"], out["runs"] = launch(instance, backfill_id, len(some), work)

        fd = chain.spec.key("filtered_docs")
        report_materialized(instance, fd, keys, graph.get(fd).code_version)
        out["tick_materialized_s"], cursor = timed(tick, instance, defs, cursor, 3)
        out["stale_plan_s"], stale = timed(plan_backfill, instance, PROJECT, chain, graph,
                                           BackfillRequest(names=["filtered_docs"], stale=True))
        assert not stale, f"{sum(len(v or []) for v in stale.values())} partitions reported stale"
    return out


def tick(instance, defs, cursor: str | None, tick_id: int) -> str | None:
    """One tick of the CPU automation sensor as the daemon runs it: the sensor's evaluation (what its code server
    does), then the evaluations stored in the instance (what the daemon does); returns the new cursor."""
    import datetime

    import dagster as dg
    from dagster._core.definitions.partitions.context import partition_loading_context

    sensor = defs.get_sensor_def("viscon_cpu_automation")
    data = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
    evaluations = [e.with_run_ids(set()) for e in data.automation_condition_evaluations or []]
    if evaluations:
        with partition_loading_context(effective_dt=datetime.datetime.now(), dynamic_partitions_store=instance):
            instance.schedule_storage.add_auto_materialize_asset_evaluations(tick_id, evaluations)
    return data.cursor


def launch(instance, backfill_id: str, partitions: int, work: Path) -> tuple[float, int]:
    """Seconds from the backfill's submission until the (running) daemon has created all its runs."""
    import dagster as dg
    from dagster._core.storage.tags import BACKFILL_ID_TAG

    submitted = instance.get_backfill(backfill_id).backfill_timestamp
    want = -(-partitions // PER_RUN)
    runs_filter = dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        records = instance.get_run_records(filters=runs_filter)
        if len(records) >= want:
            return max(r.create_timestamp.timestamp() for r in records) - submitted, len(records)
        time.sleep(0.5)
    raise RuntimeError(f"the daemon created fewer than {want} runs in 900 s; see {work / 'daemon.log'}")


FIGURES = [("register_s", "add N dynamic partitions"), ("cli_register_s", "`viscon shards register` (N new)"),
           ("cli_register_again_s", "`viscon shards register` (nothing new)"),
           ("tick_first_s", "automation sensor: first tick"), ("tick_s", "automation sensor: next tick"),
           ("tick_materialized_s", "automation sensor: a tick with `filtered_docs` materialized"),
           ("plan_s", "plan a backfill of 1,000 partitions (all, when fewer)"), ("submit_s", "submit it (GraphQL)"),
           ("launch_s", "launch it: the daemon creates its runs (50 partitions a run)"),
           ("partition_status_s", "partition status of one asset (GraphQL)"),
           ("stale_plan_s", "`viscon backfill --stale`, nothing stale")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--instances", default="sqlite,postgres")
    ap.add_argument("--launch", action="store_true", help="also time the daemon creating the backfill's runs")
    ap.add_argument("--cli-register", action="store_true",
                    help="register through `viscon shards register` over N shard files (else add_dynamic_partitions)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "scale" / "many_partitions.json"))
    args = ap.parse_args()
    load_start = os.getloadavg()
    print(f"start: {describe(load_start, None)}", file=sys.stderr)
    results = []
    with ExitStack() as stack:
        pg = Postgres(stack)
        for kind in args.instances.split(","):
            for n in [int(x) for x in args.sizes.split(",")]:
                work = Path(tempfile.mkdtemp(prefix=f"viscon-many-{kind}-{n}-"))
                try:
                    r = measure(kind, n, work, pg, args)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                r["load_after"] = os.getloadavg()[0]
                results.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    header = describe(load_start, os.getloadavg())
    sizes = sorted({r["shards"] for r in results})
    kinds = list(dict.fromkeys(r["instance"] for r in results))
    cols = [(k, n) for k in kinds for n in sizes]
    growth_col = len(sizes) > 1
    lines = [header, "", "| seconds | " + " | ".join(f"{k}, {n:,} shards" for k, n in cols) + " |"
             + (f" growth for {sizes[-1] // sizes[0]}× the shards |" if growth_col else ""),
             "|---|" + "---:|" * len(cols) + ("---|" if growth_col else "")]
    by = {(r["instance"], r["shards"]): r for r in results}
    for field, label in FIGURES:
        if not any(field in r for r in results):
            continue
        cells = [f"{by[c][field]:.2f}" if field in by.get(c, {}) else "–" for c in cols]
        growth = ""
        if growth_col:
            growth = ", ".join(f"{k} ×{by[(k, sizes[-1])][field] / by[(k, sizes[0])][field]:.1f}" for k in kinds
                               if field in by.get((k, sizes[0]), {}) and by[(k, sizes[0])][field] > 0)
            growth = f" {growth} |"
        lines.append(f"| {label} | " + " | ".join(cells) + f" |{growth}")
    print("\n".join(lines))
    Path(args.out).write_text(json.dumps({"machine": header, "args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
