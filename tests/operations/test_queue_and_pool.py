"""The instance `viscon` writes, with a real daemon: one run per shard partition at a time, and the `gpu` pool
(limit 1) never holds two GPU steps at once, even across concurrent runs."""

from pathlib import Path

import dagster as dg
import pytest

from tests.operations.harness import daemon_on, new_instance, run_span, step_spans, wait_for
from viscon_dagster.local.backfills import submit_backfill

pytestmark = pytest.mark.slow  # real servers, daemons or training: the slow tier

DEFS = Path(__file__).with_name("queue_defs.py")
STEP = dg.AssetKey("gpu_step")


def finished_runs(instance, n):
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
    return runs if len(runs) >= n else None


def test_same_partition_waits_and_gpu_steps_never_overlap(tmp_path):
    with new_instance(tmp_path / "home") as instance, daemon_on(instance, DEFS, tmp_path) as workspace:
        # two launches of shard a, and one of b and c together (two runs: one partition per run)
        for partitions in (["a"], ["a"], ["b", "c"]):
            submit_backfill(instance, workspace, {STEP: partitions})
        runs = wait_for("four finished runs", lambda: finished_runs(instance, 4))
        assert len(instance.get_backfills()) == 3
        by_partition = {}
        for run in runs:
            # a backfill run names its shards as a range (start = end here), not with dagster/partition
            assert run.tags["dagster/asset_partition_range_start"] == run.tags["dagster/asset_partition_range_end"]
            by_partition.setdefault(run.tags["dagster/asset_partition_range_start"], []).append(run.run_id)
        assert sorted((p, len(r)) for p, r in by_partition.items()) == [("a", 2), ("b", 1), ("c", 1)]
        first, second = sorted(run_span(instance, r) for r in by_partition["a"])
        assert second[0] >= first[1]  # the second run of shard a started after the first ended

        spans = sorted(span for r in runs for span in step_spans(instance, r.run_id).values())
        assert len(spans) == 4
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, spans  # under limit 1, a GPU step starts only after the previous ended
