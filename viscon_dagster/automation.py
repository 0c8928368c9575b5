"""Automation, off until switched on in the UI (Automation page): sensors start STOPPED.

- `obelics_shard_sensor` registers new source shards as partitions; it launches nothing.
- `viscon_cpu_automation` turns missing shards of the CPU stages into backfills as soon as their inputs exist.
- `viscon_gpu_automation` does the same for the model stages (captions, Q&A), inside the GPU window only
  (`VISCON_GPU_WINDOW`: an opening and a closing cron, UTC), each shard at most once per opening (a shard that
  failed waits for the next window, or a manual backfill); its backfills carry the GPU run tags launchers
  route on (`viscon_dagster/gpu.py`).
- each release re-materializes after its cron tick (`VISCON_RELEASE_CRON`, weekly by default), and only
  when some shard changed since the last release.

Every chain the factory builds is covered: the sensors target the chains' groups. The conditions live on the
assets (`assets/chain.py` calls `shard_condition` and `release_condition`).

One sensor is on by default, as it only cleans up: `viscon_dead_runs` marks failed the STARTED runs whose
process is dead, and frees their pool slots (`viscon_dagster/dead_runs.py`).
"""

import os
import warnings
from collections.abc import Sequence

import dagster as dg

from viscon_dagster.dead_runs import TTL_ENV, fail_dead_runs
from viscon_dagster.gpu import ACCELERATOR_GPU, ACCELERATOR_TAG, gpu_run_tags
from viscon_dagster.partitions import SHARD_PARTITIONS
from viscon_dagster.resources.shard_source import ShardSourceResource, register_shards
from viscon_dagster.resources.storage import StorageResource
from viscon_dagster.settings import SettingError

warnings.filterwarnings("ignore", message=".*`use_user_code_server`.*beta", category=dg.BetaWarning)

GPU_WINDOW_ENV = "VISCON_GPU_WINDOW"
DEFAULT_GPU_WINDOW = "0 22 * * *|0 6 * * *"   # 22:00 → 06:00 UTC
RELEASE_CRON_ENV = "VISCON_RELEASE_CRON"
DEFAULT_RELEASE_CRON = "0 3 * * 1"             # Mondays 03:00 UTC
INTERVAL_ENV = "VISCON_AUTOMATION_INTERVAL_S"  # how often the automation sensors evaluate
SHARD_SENSOR_INTERVAL_ENV = "VISCON_SHARD_SENSOR_INTERVAL_S"
DEAD_RUN_INTERVAL_ENV = "VISCON_DEAD_RUN_INTERVAL_S"


def _seconds(env: str, default: int) -> int:
    value = os.environ.get(env, "").strip() or str(default)
    if not value.isdigit() or int(value) < 1:
        raise SettingError(f"{env}={value!r}: expected a whole number of seconds (≥ 1)")
    return int(value)


def _cron_value(value: str, setting: str) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    if not is_valid_cron_string(value):
        raise SettingError(f"{setting}: {value!r} is not a cron string (e.g. '0 3 * * 1')")
    return value


def _cron(env: str, default: str) -> str:
    return _cron_value(os.environ.get(env, "").strip() or default, env)


def gpu_window() -> tuple[str, str]:
    """The (opening, closing) crons of the GPU window, from VISCON_GPU_WINDOW="<open cron>|<close cron>"."""
    value = os.environ.get(GPU_WINDOW_ENV, "").strip() or DEFAULT_GPU_WINDOW
    parts = [p.strip() for p in value.split("|")]
    if len(parts) != 2:
        raise SettingError(f"{GPU_WINDOW_ENV}={value!r}: expected '<opening cron>|<closing cron>' "
                           f"(e.g. {DEFAULT_GPU_WINDOW!r})")
    return _cron_value(parts[0], GPU_WINDOW_ENV), _cron_value(parts[1], GPU_WINDOW_ENV)


def _inputs_ready(optional: Sequence[dg.AssetKey]) -> dg.AutomationCondition:
    """Every input exists and none is being rewritten; `optional` inputs (read when present) do not count.

    An input requested in the same tick does not count as present (unlike `any_deps_missing`): each automation
    backfill then holds no asset together with its parent. Dagster 1.13.27's backfill daemon fails such a
    backfill when the sensor hands it key-range subsets of dynamic partitions ("Unable to determine root
    partitions for backfill ... not targeted: []": its root search compares subsets by representation)."""
    missing = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.missing()).with_label("any_deps_missing")
    running = dg.AutomationCondition.any_deps_in_progress()
    if optional:
        missing, running = missing.ignore(dg.AssetSelection.assets(*optional)), running.ignore(
            dg.AssetSelection.assets(*optional))
    return ~missing & ~running


def cpu_condition(optional: Sequence[dg.AssetKey] = ()) -> dg.AutomationCondition:
    """A shard's CPU stage runs once it is missing and its inputs exist (shards added after automation was
    switched on; older ones go through `viscon backfill --missing`), as `AutomationCondition.on_missing()`."""
    newly_missing = dg.AutomationCondition.missing().newly_true().since_last_handled()
    return (newly_missing & _inputs_ready(optional) & ~dg.AutomationCondition.in_progress()
            ).with_label("missing_with_inputs")


def gpu_condition(optional: Sequence[dg.AssetKey] = ()) -> dg.AutomationCondition:
    """A shard's model stage runs while the GPU window is open, once its inputs exist and are not being
    rewritten, and at most once per opening: a partition that failed is tried again in the next window (or by
    a manual backfill), not at every tick of this one."""
    opening, closing = gpu_window()
    opened = dg.AutomationCondition.cron_tick_passed(opening, "UTC")
    window = opened.since(dg.AutomationCondition.cron_tick_passed(closing, "UTC")).with_label("gpu_window_open")
    # `newly_requested` is true at the tick after a request: from then until the next opening
    requested = dg.AutomationCondition.newly_requested().since(opened).with_label("requested_in_this_window")
    return (dg.AutomationCondition.missing() & window & ~requested & _inputs_ready(optional)
            & ~dg.AutomationCondition.in_progress()).with_label("missing_in_gpu_window")


def shard_condition(gpu: bool, optional: Sequence[dg.AssetKey] = ()) -> dg.AutomationCondition:
    return gpu_condition(optional) if gpu else cpu_condition(optional)


def release_condition() -> dg.AutomationCondition:
    """After each release cron tick, once some shard was rematerialized since the last release and none is
    being written."""
    cron = _cron(RELEASE_CRON_ENV, DEFAULT_RELEASE_CRON)
    return (dg.AutomationCondition.cron_tick_passed(cron, "UTC").since_last_handled()
            & dg.AutomationCondition.any_deps_updated().since_last_handled()
            & ~dg.AutomationCondition.any_deps_in_progress() & ~dg.AutomationCondition.in_progress()
            ).with_label("release_when_shards_changed")


def automation_sensors(groups: list[str]) -> list[dg.AutomationConditionSensorDefinition]:
    """The two automation sensors over the chains' groups: GPU stages (GPU run tags) and the rest."""
    chains = dg.AssetSelection.groups(*groups)
    gpu = dg.AssetSelection.tag(ACCELERATOR_TAG, ACCELERATOR_GPU)
    interval = _seconds(INTERVAL_ENV, 30)
    common = {"emit_backfills": True, "default_status": dg.DefaultSensorStatus.STOPPED,
              "minimum_interval_seconds": interval, "use_user_code_server": True}
    return [
        dg.AutomationConditionSensorDefinition(
            "viscon_cpu_automation", target=chains - gpu, **common,
            description="Backfills the missing shards of the CPU stages and the releases' cron updates."),
        dg.AutomationConditionSensorDefinition(
            "viscon_gpu_automation", target=chains & gpu, run_tags=gpu_run_tags(), **common,
            description="Backfills the missing shards of the model stages inside the GPU window, tagged "
                        "for GPU capacity."),
    ]


@dg.sensor(minimum_interval_seconds=_seconds(SHARD_SENSOR_INTERVAL_ENV, 300),
           default_status=dg.DefaultSensorStatus.STOPPED,
           description="Registers new source shards as partitions of their set (obelics_shards, or obelics_shards_1m "
                       "with VISCON_SHARD_SET=1m); no runs launched.")
def obelics_shard_sensor(context: dg.SensorEvaluationContext, storage: StorageResource,
                         shard_source: ShardSourceResource) -> dg.SensorResult | dg.SkipReason:
    source, shard_set = shard_source.resolved, shard_source.resolved_set  # VisCon-1M: VISCON_SHARD_SET=1m
    partitions = SHARD_PARTITIONS[shard_set]
    registration = register_shards(storage, source, shard_set)
    for bad in registration.refused:
        context.log.warning(f"refused shard {bad.key} ({bad.url}): {bad.reason}")
    known = set(context.instance.get_dynamic_partitions(partitions.name))
    new = [k for k in registration.keys if k not in known]
    if not new:
        refused = f"; {len(registration.refused)} refused (see the tick's log)" if registration.refused else ""
        return dg.SkipReason(f"no new shards under {source}{refused}")
    return dg.SensorResult(dynamic_partitions_requests=[partitions.build_add_request(new)])


@dg.sensor(minimum_interval_seconds=_seconds(DEAD_RUN_INTERVAL_ENV, 60), default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks failed the STARTED runs whose process is dead (their run lease expired, or names a "
                       f"process of this machine that is gone; {TTL_ENV}) and frees their pool slots; launches "
                       "nothing. On by default: it only cleans up.")
def viscon_dead_runs(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    failed = fail_dead_runs(context.instance)
    for run_id, why in failed:
        context.log.warning(f"marked run {run_id} failed: its process is dead ({why}); its pool slots are free")
    return dg.SkipReason(f"marked {len(failed)} dead runs failed" if failed else "no dead run")
