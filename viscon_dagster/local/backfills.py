"""Backfills, submitted the way the UI submits them (GraphQL `launchPartitionBackfill`) and run by `dagster-daemon`.

    plan_backfill(chain, graph, names, ...)                 # which assets and shards (`viscon backfill`'s rules)
    submit_backfill(instance, workspace, {key: [shards]})   # listed on the UI's backfills page
    wait_for_backfill(instance, backfill_id, ...)           # a line of progress per change
    run_backfill(...)                                        # all three, with a daemon for the duration

A backfill's runs carry up to `VISCON_PARTITIONS_PER_RUN` shards each (the assets' `BackfillPolicy.multi_run`) and
the whole per-shard chain in one run when the stages' partitions line up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from viscon_dagster.local.daemon import running_daemon
from viscon_dagster.local.workspace import PROJECT, Workspace, graphql
from viscon_dagster.settings import SettingError

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


# what tells whether one list of partition names means the same shards for every asset of a backfill
PARTITIONINGS = """
query Partitionings($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) { partitionDefinition { type name description } }
}"""
CANDIDATES = """
query Candidates($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { staleStatusByPartition(partitions: $partitions) }
  }
}"""


class BackfillError(RuntimeError):
    pass


@dataclass(frozen=True)
class BackfillRequest:
    """What `viscon backfill` asks for: assets of one chain by name, and which shards."""
    names: Sequence[str]                  # e.g. ["captions", "qa_pairs"] or ["release"]
    partitions: Sequence[str] | None = None  # default: every registered shard
    missing: bool = False                 # only shards never materialized
    stale: bool = False                   # only shards the instance reports stale
    downstream: bool = False              # also the same shards of every per-shard asset below


def plan_backfill(instance: dg.DagsterInstance, workspace: Workspace, chain, graph,
                  request: BackfillRequest) -> dict[dg.AssetKey, list[str] | None]:
    """The chain's assets and shards a request names (None: the unpartitioned release); a SettingError for an
    asset not in the chain or a shard not registered."""
    shard_keys = set(chain.shard_selection.resolve(graph)) | {chain.spec.key("noncontextual_captions")}
    selected = []
    for name in request.names:
        key = chain.spec.release_key if name in ("release", chain.spec.release_name) else chain.spec.key(name)
        if key not in shard_keys and key != chain.spec.release_key:
            raise SettingError(f"--select {name}: not an asset of the {chain.spec.group} chain "
                               f"({', '.join(sorted(k.path[-1] for k in shard_keys))}, release)")
        selected.append(key)
    registered = instance.get_dynamic_partitions(chain.spec.partitions_def.name)
    if request.stale or request.missing:
        state = staleness(instance, workspace, selected, graph)
        chosen = state.stale if request.stale else state.missing
    else:
        keys = list(request.partitions) if request.partitions else registered
        unknown = sorted(set(keys) - set(registered))
        if unknown:
            raise SettingError(f"--partitions: not registered in {chain.spec.partitions_def.name}: "
                               f"{', '.join(unknown)}")
        chosen = {k: keys for k in selected}

    def partitions_of(key):
        return None if key == chain.spec.release_key else chosen.get(key, [])

    return plan(graph, shard_keys, selected, partitions_of, request.downstream)


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
    params: dict = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
    if run_config:
        params["runConfigData"] = dict(run_config)
    if title:
        params["title"] = title
    by_ranges = {**params, "partitionsByAssets": [_partitions_input(k, p) for k, p in partitions_by_asset.items()]}
    lists = {tuple(p) for p in partitions_by_asset.values() if p is not None}
    partitioned = [{"path": list(k.path)} for k, p in partitions_by_asset.items() if p is not None]
    with graphql(instance, workspace) as run:
        params = by_ranges
        if len(lists) == 1 and len({json.dumps(n["partitionDefinition"], sort_keys=True) for n in run(
                PARTITIONINGS, {"keys": partitioned})["assetNodes"]}) == 1:
            # the same shards for assets of one partitioning: one list of names. Dagster checks each range of
            # `partitionsByAssets` against the instance (two queries a range, ~5 ms a shard: 1,000 shards took 4.5 s)
            params = {**by_ranges, "assetSelection": [{"path": list(k.path)} for k in partitions_by_asset],
                      "partitionNames": list(next(iter(lists)))}
            del params["partitionsByAssets"]
        result = run(LAUNCH, {"params": params})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise BackfillError(f"backfill refused ({result['__typename']}): {result.get('message')}")
    return result["backfillId"]


@dataclass(frozen=True)
class Staleness:
    stale: dict[dg.AssetKey, list[str]]    # materialized partitions whose code or inputs changed
    missing: dict[dg.AssetKey, list[str]]  # registered partitions never materialized


def staleness(instance: dg.DagsterInstance, workspace: Workspace, keys: Sequence[dg.AssetKey],
              graph=None) -> Staleness:
    """Per-partition staleness as the instance computes it (what the UI shows). With the asset `graph`, the
    partitions that cannot be stale are screened out in bulk first (local/staleness.py) and Dagster is asked about
    the others only: its own per-partition answer costs ~4 ms a partition."""
    from viscon_dagster.local.staleness import screen

    screened = {k: s for k in keys if graph is not None and (s := screen(instance, graph, k)) is not None}
    stale: dict[dg.AssetKey, list[str]] = {}
    missing: dict[dg.AssetKey, list[str]] = {}
    with graphql(instance, workspace) as run:
        rest = [k for k in keys if k not in screened]
        nodes = run(STALENESS, {"keys": [{"path": list(k.path)} for k in rest]})["assetNodes"] if rest else []
        for key, s in screened.items():
            missing[key] = s.missing
            statuses = run(CANDIDATES, {"key": {"path": list(key.path)}, "partitions": s.candidates})[
                "assetNodeOrError"]["staleStatusByPartition"] if s.candidates else []
            stale[key] = [p for p, status in zip(s.candidates, statuses, strict=True) if status == "STALE"]
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
            ok = backfill.status == BulkActionStatus.COMPLETED_SUCCESS and sum(done.values()) == total
            if not ok:
                on_progress(why_backfill_failed(instance, backfill_id, backfill.status.value))
            return ok
        if sum(done.values()) == total and not _unfinished_runs(instance, backfill_id):
            return True  # the daemon marks the backfill completed at its next pass (up to 30 s later)
        if time.monotonic() > deadline:
            raise BackfillError(f"backfill {backfill_id} still {backfill.status.value} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _backfill_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    from dagster._core.storage.tags import BACKFILL_ID_TAG

    return list(instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id})))


def _unfinished_runs(instance: dg.DagsterInstance, backfill_id: str) -> list[dg.DagsterRun]:
    return [r for r in _backfill_runs(instance, backfill_id) if not r.is_finished]


def _error_of(event) -> str:
    """A failure event's error (for a step, the user code's exception that Dagster wraps), else its log message."""
    error = getattr(event.dagster_event.event_specific_data, "error", None)
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message if error is not None else event.message


def why_backfill_failed(instance: dg.DagsterInstance, backfill_id: str, status: str, most: int = 5) -> str:
    """What ended the backfill badly: its failed or canceled runs, each with its first error message."""
    runs = _backfill_runs(instance, backfill_id)
    bad = [r for r in runs if r.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)]
    lines = [f"  backfill {backfill_id} ended {status}: {len(bad)} of its {len(runs)} runs failed or were canceled"]
    for run in bad[:most]:
        errors = [_error_of(e) for e in instance.all_logs(run.run_id) if e.dagster_event is not None
                  and e.dagster_event.event_type_value in ("STEP_FAILURE", "RUN_FAILURE", "RUN_CANCELED")]
        first = (errors[0] if errors else run.status.value).strip().splitlines()[0][:300]
        lines.append(f"    run {run.run_id} ({', '.join(k.to_user_string() for k in run.asset_selection or ())}): "
                     f"{first}")
    if not bad:
        lines.append("    no run failed: some partitions were not materialized (see the backfill in the UI)")
    return "\n".join(lines)


def run_backfill(instance: dg.DagsterInstance, partitions_by_asset: Mapping[dg.AssetKey, Sequence[str] | None], *,
                 workspace: Workspace = PROJECT, run_config: Mapping | None = None,
                 tags: Mapping[str, str] | None = None, title: str | None = None,
                 on_progress: Callable[[str], None] = print, daemon_log: Path | None = None,
                 start_daemon: bool = True) -> bool:
    """Submit a backfill and wait for it with a line of progress per change, with a daemon for the duration unless
    one serves the instance (`start_daemon=False`: the caller runs one for several backfills)."""
    cursor = event_cursor(instance)
    backfill_id = submit_backfill(instance, workspace, partitions_by_asset, run_config=run_config, tags=tags,
                                  title=title)
    on_progress(f"  backfill {backfill_id} submitted (the UI lists it under Backfills)")
    if not start_daemon:
        return wait_for_backfill(instance, backfill_id, partitions_by_asset, cursor, on_progress=on_progress)
    with running_daemon(instance, workspace, daemon_log):
        return wait_for_backfill(instance, backfill_id, partitions_by_asset, cursor, on_progress=on_progress)
