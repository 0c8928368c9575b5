"""`viscon …`: the demo, sample data, tiny models, shard registration.

    viscon demo                   sample → tiny models → register shards → materialize every shard
    viscon sample [--out DIR]     write the bundled OBELICS-format sample corpus
    viscon models tiny [--out D]  build the tiny local models (offline)
    viscon shards register SRC    register a source's shards as obelics_shards partitions (exit 1 if any is refused);
                                  --set 1m: as VisCon-1M's obelics_shards_1m (a shard of the other set is refused)
    viscon shards list [--set S]  the registered shard partitions (and, on stderr, the refused shards)
    viscon backfill --select A,B [--set 100k|1m] [--partitions K,L | --missing | --stale] [--downstream] [--wait]
                                  a Dagster backfill (on the UI's backfills page), run by the daemon
    viscon ui                     open the Dagster UI on the same instance

Without a dagster.yaml in DAGSTER_HOME, `viscon` writes one: SQLite in that folder, run monitoring on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from viscon_dagster import paths
from viscon_dagster.core.shards.registry import DEFAULT_SET, SHARD_SETS, ShardKeyConflict
from viscon_dagster.core.shards.sources import OBELICS_HUB_SOURCE, ShardSourceNotFound
from viscon_dagster.local.instance import local_instance, resolved_storage
from viscon_dagster.settings import SettingError


def cmd_sample(args) -> list[Path]:
    from viscon_dagster.demo.sample_corpus import SampleSpec, write_sample

    out = Path(args.out or paths.sample_dir())
    shards = write_sample(out, SampleSpec(shards=args.shards, docs_per_shard=args.docs, seed=args.seed,
                                          shards_1m=args.shards_1m, docs_per_shard_1m=args.docs_1m))
    also = f" (VisCon-1M's {args.shards_1m} in {out / 'shards_1m'})" if args.shards_1m else ""
    print(f"wrote {len(shards)} shards to {out / 'shards'}{also} and their images to {out / 'images'}")
    return shards


def cmd_models_tiny(args) -> Path:
    from viscon_dagster.demo.tiny_models import build_tiny_models

    out = Path(args.out or paths.models_dir())
    for role, path in build_tiny_models(out).items():
        print(f"tiny {role}: {path}")
    return out


def cmd_shards_register(args) -> int:
    from viscon_dagster.local.shards import register_source_shards

    return 1 if register_source_shards(args.source, args.set).refused else 0


def cmd_shards_list(args) -> None:
    from viscon_dagster.core.shards.registry import refused_shards
    from viscon_dagster.partitions import SHARD_PARTITIONS

    for key in local_instance().get_dynamic_partitions(SHARD_PARTITIONS[args.set].name):
        print(key)
    with resolved_storage() as storage:
        for bad in refused_shards(storage.root_path(), args.set):
            print(f"refused {bad.key} ({bad.url}): {bad.reason}", file=sys.stderr)


def cmd_demo(args) -> int:
    from viscon_dagster.demo.steps import run_demo

    return run_demo(fresh=args.fresh)


def cmd_backfill(args) -> int:
    """`viscon backfill`: a real Dagster backfill of the chosen assets and shards (the UI lists it)."""
    from viscon_dagster.definitions import chain_for_set
    from viscon_dagster.gpu import GPU_POOL, gpu_run_tags
    from viscon_dagster.local.backfills import BackfillRequest, plan_backfill, run_backfill, submit_backfill
    from viscon_dagster.local.daemon import daemon_alive
    from viscon_dagster.local.workspace import PROJECT, Workspace

    workspace = Workspace.from_yaml(Path(args.workspace)) if args.workspace else PROJECT
    # the workspace's own code: its code versions are the ones staleness is judged by
    graph, instance = workspace.definitions().resolve_asset_graph(), local_instance()
    request = BackfillRequest(names=[n.strip() for n in args.select.split(",") if n.strip()],
                              partitions=[k.strip() for k in args.partitions.split(",")] if args.partitions else None,
                              missing=args.missing, stale=args.stale, downstream=args.downstream)
    todo = plan_backfill(instance, workspace, chain_for_set(args.set), graph, request)
    if not todo:
        print("nothing to backfill: " + ("no stale partitions" if args.stale else "no missing partitions"
                                         if args.missing else "no partitions"))
        return 0
    for key, parts in todo.items():
        print(f"  {key.to_user_string()}: {'(unpartitioned)' if parts is None else f'{len(parts)} shards'}")
    tags = gpu_run_tags() if any(GPU_POOL in (graph.get(k).pools or ()) for k in todo) else {}  # launchers route
    title = f"viscon backfill {args.select}" + (" --stale" if args.stale else " --missing" if args.missing else "")
    if args.wait:
        return 0 if run_backfill(instance, todo, workspace=workspace, tags=tags, title=title,
                                 daemon_log=paths.dagster_home() / "daemon.log") else 1
    backfill_id = submit_backfill(instance, workspace, todo, tags=tags, title=title)
    print(f"backfill {backfill_id} submitted; the daemon runs it (`viscon ui` or `dagster-daemon run`)"
          + ("" if daemon_alive(instance) else " — no daemon is running on this instance now"))
    return 0


def cmd_ui(args) -> int:
    local_instance()
    project = Path(__file__).resolve().parent.parent  # [tool.dg] in its pyproject.toml names the code location
    dg = Path(sys.executable).with_name("dg")
    return subprocess.call([str(dg), "dev", "--host", args.host, "--port", str(args.port)], cwd=project)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="viscon", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    demo = sub.add_parser("demo", help="run the whole graph on the bundled sample with tiny local models")
    demo.add_argument("--fresh", action="store_true", help="rebuild the sample and the tiny models")
    demo.set_defaults(fn=cmd_demo)

    sample = sub.add_parser("sample", help="write the OBELICS-format sample corpus")
    sample.add_argument("--out", help="folder (default .viscon/sample)")
    sample.add_argument("--shards", type=int, default=4)
    sample.add_argument("--docs", type=int, default=72, help="good documents per shard")
    sample.add_argument("--shards-1m", type=int, default=2, help="VisCon-1M's own shards (other pages), in shards_1m/")
    sample.add_argument("--docs-1m", type=int, default=None, help="good documents per 1M shard (default --docs)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(fn=cmd_sample)

    models = sub.add_parser("models", help="local models").add_subparsers(dest="models_cmd", required=True)
    tiny = models.add_parser("tiny", help="build the tiny random-weight models, offline")
    tiny.add_argument("--out", help="folder (default .viscon/models)")
    tiny.set_defaults(fn=cmd_models_tiny)

    shards = sub.add_parser("shards", help="shard partitions").add_subparsers(dest="shards_cmd", required=True)
    reg = shards.add_parser("register", help="register a source's parquet shards as partitions; a file that is not "
                                             "an OBELICS parquet shard is refused with its reason (exit status 1)")
    reg.add_argument("source", help=f"local folder, s3://bucket/prefix or hf://datasets/<repo>/<folder> "
                                    f"(OBELICS: {OBELICS_HUB_SOURCE})")
    shard_set = dict(choices=list(SHARD_SETS), default=DEFAULT_SET,
                     help="the dataset whose shards these are: 100k (obelics_shards) or 1m (obelics_shards_1m); "
                          "the sets are disjoint")
    reg.add_argument("--set", **shard_set)
    reg.set_defaults(fn=cmd_shards_register)
    listing = shards.add_parser("list", help="list registered shard partitions")
    listing.add_argument("--set", **shard_set)
    listing.set_defaults(fn=cmd_shards_list)

    bf = sub.add_parser("backfill", help="submit a Dagster backfill of assets over shards (listed in the UI)")
    bf.add_argument("--select", required=True, help="comma-separated assets of the chain (filtered_docs, images, "
                                                     "captions, noncontextual_captions, qa_pairs, unique_qa_pairs, "
                                                     "conversations, release)")
    bf.add_argument("--set", **shard_set)
    which = bf.add_mutually_exclusive_group()
    which.add_argument("--partitions", help="comma-separated shard keys (default: every registered shard)")
    which.add_argument("--missing", action="store_true", help="only shards never materialized")
    which.add_argument("--stale", action="store_true", help="only shards the instance reports stale (a changed "
                                                            "prompt, model or code version)")
    bf.add_argument("--downstream", action="store_true", help="also the same shards of every asset below")
    bf.add_argument("--wait", action="store_true", help="wait for it (starting a daemon if none is running)")
    bf.add_argument("--workspace", help="a workspace.yaml (default: this project's)")
    bf.set_defaults(fn=cmd_backfill)

    ui = sub.add_parser("ui", help="open the Dagster UI on the demo's instance")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(fn=cmd_ui)

    args = p.parse_args(argv)
    try:
        result = args.fn(args)
    except (SettingError, ShardKeyConflict, ShardSourceNotFound) as e:
        print(f"viscon: {e}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
