"""How every Dagster instance of this project queues, limits and watches its runs: the one home of that policy.

The local instance `viscon` writes (`local/instance.py`) is generated from it; the shipped instance configs
(`deploy/dagster.yaml`, `deploy/ecs/dagster.yaml`, `deploy/helm/values.yaml`) are checked against it by
tests/deploy, and differ only in what a deployment sizes (how many runs, GPUs, how long a GPU node takes to start).

- one run per shard at a time: runs of one partition carry `dagster/partition`, backfill runs the range tags;
- the `gpu` pool (`gpu.GPU_POOL`) holds the caption and Q&A steps; its limit is the number of GPUs. Dagster keeps
  a pool's limit in the instance's storage, not in dagster.yaml (`dagster instance concurrency set gpu N`):
  `apply_pool_limits` sets it, and other pools stay unlimited (no `pools.default_limit`, which caps every pool);
- run monitoring fails runs whose worker never started or died, and gives back the pool slots of ended runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from viscon_dagster.gpu import GPU_POOL

DAY_S = 24 * 3600

# one run per shard: a run of one partition carries dagster/partition, a backfill run the start of its range
RUN_TAG_LIMITS: list[dict[str, Any]] = [
    {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
    {"key": "dagster/asset_partition_range_start", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
]


@dataclass(frozen=True)
class InstanceSizes:
    """What a deployment sizes; the rest of the policy is the same everywhere."""
    max_concurrent_runs: int = 4
    gpus: int = 1                          # the `gpu` pool's limit
    poll_interval_seconds: int = 30
    start_timeout_seconds: int = 300       # a launched run whose worker never starts is failed
    max_runtime_seconds: int = 2 * DAY_S   # above any partition's run (an OpenAI batch may take 24 h)
    free_slots_after_run_end_seconds: int = 60


LOCAL = InstanceSizes()
PRODUCTION = InstanceSizes(max_concurrent_runs=64, gpus=16, poll_interval_seconds=60, start_timeout_seconds=600,
                           free_slots_after_run_end_seconds=300)


def concurrency(sizes: InstanceSizes) -> dict[str, Any]:
    """dagster.yaml's `concurrency` section (pool limits: `apply_pool_limits`)."""
    return {"runs": {"max_concurrent_runs": sizes.max_concurrent_runs,
                     "tag_concurrency_limits": [dict(limit) for limit in RUN_TAG_LIMITS]}}


def run_monitoring(sizes: InstanceSizes) -> dict[str, Any]:
    """dagster.yaml's `run_monitoring` section."""
    return {"enabled": True, "poll_interval_seconds": sizes.poll_interval_seconds,
            "start_timeout_seconds": sizes.start_timeout_seconds, "cancel_timeout_seconds": 300,
            "max_resume_run_attempts": 0, "max_runtime_seconds": sizes.max_runtime_seconds,
            "free_slots_after_run_end_seconds": sizes.free_slots_after_run_end_seconds}


def pool_limits(sizes: InstanceSizes) -> dict[str, int]:
    return {GPU_POOL: sizes.gpus}


def apply_pool_limits(instance, sizes: InstanceSizes, overwrite: bool = False) -> dict[str, int]:
    """Set the pools' limits in the instance's storage (as `dagster instance concurrency set` does) where none is
    set yet, or everywhere with `overwrite`; returns the limits set."""
    storage = instance.event_log_storage
    known = storage.get_concurrency_keys()
    applied = {}
    for pool, limit in pool_limits(sizes).items():
        if overwrite or pool not in known:
            storage.set_concurrency_slots(pool, limit)
            applied[pool] = limit
    return applied
