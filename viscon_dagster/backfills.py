"""Backfills, submitted the way the UI submits them and run by `dagster-daemon`.

    submit_backfill(instance, workspace, {key: [shards]})   # GraphQL `launchPartitionBackfill`, in process
    wait_for_backfill(instance, backfill_id, on_progress=print)
    stale_partitions(instance, workspace, keys)            # the instance's per-partition staleness
    with running_daemon(instance_home, workspace): ...      # a daemon for this process, unless one is alive

A backfill submitted here is listed on the UI's backfills page like one launched there; its runs carry up to
`VISCON_PARTITIONS_PER_RUN` shards each (the assets' `BackfillPolicy.multi_run`) and the whole per-shard chain
in one run when the stages' partitions line up.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

PROJECT_WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"
DAEMON_FRESH_S = 60  # a daemon whose last heartbeat is younger than this is taken as alive

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { stack }
  }
}"""

STALENESS = """
query Staleness($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    isPartitioned
    partitionKeys
    staleStatusByPartition
    staleStatus
  }
}"""


class BackfillError(RuntimeError):
    pass


@dataclass(frozen=True)
class Workspace:
    """One code location: `yaml` for the daemon (its own code server); loaded in this process for GraphQL,
    which saves starting a second code server just to submit."""
    yaml: Path
    location_name: str
    module_name: str | None = None
    python_file: str | None = None

    def in_process_target(self):
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
        from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

        origin = LoadableTargetOrigin(executable_path=sys.executable, module_name=self.module_name,
                                      python_file=self.python_file, working_directory=str(self.yaml.parent))
        return InProcessWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin, location_name=self.location_name))


    @staticmethod
    def from_yaml(path: Path) -> Workspace:
        """The first code location of a workspace.yaml (`python_module` or `python_file`)."""
        import yaml

        entry = yaml.safe_load(path.read_text())["load_from"][0]
        kind, spec = next(iter(entry.items()))
        if kind == "python_module":
            spec = {"module_name": spec} if isinstance(spec, str) else spec
            return Workspace(path.resolve(), spec.get("location_name", spec["module_name"]),
                             module_name=spec["module_name"])
        if kind == "python_file":
            spec = {"relative_path": spec} if isinstance(spec, str) else spec
            file = (path.parent / spec["relative_path"]).resolve()
            return Workspace(path.resolve(), spec.get("location_name", file.stem), python_file=str(file))
        raise BackfillError(f"{path}: only python_module and python_file code locations are supported here")


PROJECT = Workspace(PROJECT_WORKSPACE, "viscon_dagster", module_name="viscon_dagster.definitions")


def file_workspace(python_file: Path, folder: Path, location_name: str = "viscon_dagster") -> Workspace:
    """A workspace of one definitions file (tests, benchmarks), its yaml written into `folder`."""
    yaml = folder / "workspace.yaml"
    yaml.write_text(f"load_from:\n  - python_file:\n      relative_path: {python_file}\n"
                    f"      location_name: {location_name}\n")
    return Workspace(yaml, location_name, python_file=str(python_file))


@contextmanager
def _graphql(instance: dg.DagsterInstance, workspace: Workspace) -> Iterator[Callable]:
    from dagster._core.definitions.partitions.context import partition_loading_context
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster_graphql import __version__
    from dagster_graphql.cli import execute_query

    target = workspace.in_process_target()
    with WorkspaceProcessContext(instance, target, version=__version__, read_only=False) as context:
        for location in context.create_request_context().get_code_location_entries().values():
            if location.load_error:
                raise BackfillError(f"code location {location.origin.location_name} failed to load: "
                                    f"{location.load_error.message}")

        def run(query: str, variables: Mapping) -> dict:
            # ranges of dynamic partitions are resolved against the instance (GraphQL leaves it unset)
            with partition_loading_context(dynamic_partitions_store=instance):
                result = execute_query(context, query, variables)
            if result.get("errors"):
                raise BackfillError(f"GraphQL: {result['errors'][0].get('message')}")
            return result["data"]

        yield run


def _partitions_input(key: dg.AssetKey, partitions: Sequence[str] | None) -> dict:
    selector: dict = {"assetKey": {"path": list(key.path)}}
    if partitions is not None:
        selector["partitions"] = {"ranges": [{"start": p, "end": p} for p in partitions]}
    return selector


def submit_backfill(instance: dg.DagsterInstance, workspace: Workspace,
                    partitions_by_asset: Mapping[dg.AssetKey, Sequence[str] | None], *,
                    run_config: Mapping | None = None, tags: Mapping[str, str] | None = None,
                    title: str | None = None) -> str:
    """Submit one asset backfill (None: an unpartitioned asset); returns its id."""
    params: dict = {
        "partitionsByAssets": [_partitions_input(k, p) for k, p in partitions_by_asset.items()],
        "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
    }
    if run_config:
        params["runConfigData"] = dict(run_config)
    if title:
        params["title"] = title
    with _graphql(instance, workspace) as run:
        result = run(LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"backfill refused ({result['__typename']}): {result.get('message')}")
    return result["backfillId"]


@dataclass(frozen=True)
class Staleness:
    stale: dict[dg.AssetKey, list[str]]    # materialized partitions whose code or inputs changed
    missing: dict[dg.AssetKey, list[str]]  # registered partitions never materialized


def staleness(instance: dg.DagsterInstance, workspace: Workspace, keys: Sequence[dg.AssetKey]) -> Staleness:
    """Per-partition staleness as the instance computes it (what the UI shows)."""
    with _graphql(instance, workspace) as run:
        nodes = run(STALENESS, {"keys": [{"path": list(k.path)} for k in keys]})["assetNodes"]
    stale: dict[dg.AssetKey, list[str]] = {}
    missing: dict[dg.AssetKey, list[str]] = {}
    for node in nodes:
        key = dg.AssetKey(node["assetKey"]["path"])
        if node["isPartitioned"]:
            pairs = list(zip(node["partitionKeys"], node["staleStatusByPartition"], strict=True))
        else:
            pairs = [(None, node["staleStatus"])]
        stale[key] = [p for p, s in pairs if s == "STALE"]
        missing[key] = [p for p, s in pairs if s == "MISSING"]
    return Staleness(stale, missing)


def plan(graph, shard_keys: set[dg.AssetKey], selected: Sequence[dg.AssetKey],
         partitions_of: Callable[[dg.AssetKey], Sequence[str] | None],
         downstream: bool = False) -> dict[dg.AssetKey, list[str] | None]:
    """What to backfill: each selected asset's partitions (None: unpartitioned), and with `downstream` the same
    shards of every per-shard asset below it (they read what is rewritten)."""
    wanted: dict[dg.AssetKey, set[str] | None] = {}
    for key in selected:
        parts = partitions_of(key)
        wanted[key] = None if parts is None else set(parts)
        if downstream and parts:
            for child in sorted(_descendants(graph, key)):
                if child in shard_keys:
                    wanted[child] = (wanted.get(child) or set()) | set(parts)
    return {k: (None if p is None else sorted(p)) for k, p in wanted.items() if p is None or p}


def _descendants(graph, key: dg.AssetKey) -> set[dg.AssetKey]:
    found, todo = set(), [key]
    while todo:
        for child in graph.get(todo.pop()).child_keys:
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _materialized_since(instance: dg.DagsterInstance, key: dg.AssetKey, after_storage_id: int) -> set[str | None]:
    from dagster._core.storage.event_log.base import AssetRecordsFilter

    found: set[str | None] = set()
    cursor = None
    while True:
        page = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, after_storage_id=after_storage_id),
                                               limit=10_000, cursor=cursor)
        found.update(r.partition_key for r in page.records)
        if not page.has_more:
            return found
        cursor = page.cursor


def event_cursor(instance: dg.DagsterInstance) -> int:
    """The newest event's id: materializations after it belong to what is submitted next."""
    return instance.event_log_storage.get_maximum_record_id() or 0


def wait_for_backfill(instance: dg.DagsterInstance, backfill_id: str,
                      partitions_by_asset: Mapping[dg.AssetKey, Sequence[str] | None], after_storage_id: int, *,
                      on_progress: Callable[[str], None] = print, timeout_s: float = 6 * 3600,
                      poll_s: float = 1.0) -> bool:
    """Wait until the backfill ends, reporting each asset's finished partitions as they land; True on success."""
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES, BulkActionStatus

    wanted = {k: set(p) if p is not None else {None} for k, p in partitions_by_asset.items()}
    total = sum(len(p) for p in wanted.values())
    last = ""
    deadline = time.monotonic() + timeout_s
    while True:
        backfill = instance.get_backfill(backfill_id)
        done = {k: len(_materialized_since(instance, k, after_storage_id) & p) for k, p in wanted.items()}
        line = f"  {sum(done.values())}/{total} done: " + ", ".join(
            f"{k.to_user_string()} {n}/{len(wanted[k])}" for k, n in done.items())
        if line != last:
            on_progress(line)
            last = line
        if backfill.status in BULK_ACTION_TERMINAL_STATUSES:
            return backfill.status == BulkActionStatus.COMPLETED_SUCCESS and sum(done.values()) == total
        if sum(done.values()) == total and not _unfinished_runs(instance, backfill_id):
            return True  # the daemon marks the backfill completed at its next pass (up to 30 s later)
        if time.monotonic() > deadline:
            raise BackfillError(f"backfill {backfill_id} still {backfill.status.value} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _unfinished_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    from dagster._core.storage.tags import BACKFILL_ID_TAG

    return [r for r in instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}))
            if not r.is_finished]


def daemon_alive(instance: dg.DagsterInstance) -> bool:
    beats = instance.get_daemon_heartbeats()
    beat = beats.get("BACKFILL")
    return beat is not None and time.time() - beat.timestamp < DAEMON_FRESH_S


@contextmanager
def running_daemon(instance: dg.DagsterInstance, workspace: Workspace, log: Path | None = None,
                   command: Sequence[str] | None = None) -> Iterator[int | None]:
    """A `dagster-daemon run` on this instance for the duration, unless a live one already serves it
    (`viscon ui`, `dg dev`); yields its pid (None when an existing daemon is used). Stopped by its pid.
    `command`: what starts the daemon (default: this environment's `dagster-daemon`)."""
    if _kept is not None and _kept.poll() is None:
        yield _kept.pid
        return
    if daemon_alive(instance):
        yield None
        return
    daemon = _start_daemon(instance, workspace, log, command)
    try:
        yield daemon.pid
    finally:
        _stop(daemon)


_kept: subprocess.Popen | None = None


def keep_daemon(instance: dg.DagsterInstance, workspace: Workspace, log: Path | None = None) -> None:
    """Start a daemon for this process's later backfills (the demo's steps share one: a daemon takes tens of
    seconds to start), stopped by its pid when the process exits; nothing when a live one serves the instance."""
    global _kept
    if (_kept is not None and _kept.poll() is None) or daemon_alive(instance):
        return
    _kept = _start_daemon(instance, workspace, log)
    atexit.register(_stop, _kept)


def _start_daemon(instance: dg.DagsterInstance, workspace: Workspace, log: Path | None,
                  command: Sequence[str] | None = None) -> subprocess.Popen:
    out = log.open("a") if log else subprocess.DEVNULL
    command = list(command or [str(Path(sys.executable).with_name("dagster-daemon"))])
    try:
        return subprocess.Popen([*command, "run", "-w", str(workspace.yaml)],
                                env={**os.environ, "DAGSTER_HOME": instance.root_directory},
                                cwd=workspace.yaml.parent, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        if log:
            out.close()  # the daemon holds its own copy


def _stop(daemon: subprocess.Popen) -> None:
    if daemon.poll() is not None:
        return
    daemon.send_signal(signal.SIGINT)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def run_backfill(instance: dg.DagsterInstance, partitions_by_asset: Mapping[dg.AssetKey, Sequence[str] | None], *,
                 workspace: Workspace = PROJECT, run_config: Mapping | None = None,
                 tags: Mapping[str, str] | None = None, title: str | None = None,
                 on_progress: Callable[[str], None] = print, daemon_log: Path | None = None) -> bool:
    """Submit a backfill, make sure a daemon runs it, and wait for it with a line of progress per change."""
    cursor = event_cursor(instance)
    backfill_id = submit_backfill(instance, workspace, partitions_by_asset, run_config=run_config, tags=tags,
                                  title=title)
    on_progress(f"  backfill {backfill_id} submitted (the UI lists it under Backfills)")
    with running_daemon(instance, workspace, daemon_log):
        return wait_for_backfill(instance, backfill_id, partitions_by_asset, cursor, on_progress=on_progress)
