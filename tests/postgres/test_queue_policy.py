"""deploy/dagster.yaml's queue on a real PostgreSQL server with a real daemon: two backfill runs over ranges that
start on the same shard never run at once (the `dagster/asset_partition_range_start` limit of
viscon_dagster/instance_policy.py; a backfill run carries no `dagster/partition`), and the `gpu` pool's limit is
set in the database by the command deploy/README.md gives."""

from __future__ import annotations

import subprocess
from pathlib import Path

import dagster as dg
import pytest

from tests.operations.harness import daemon_on, run_span, wait_for
from tests.postgres.services import BIN
from viscon_dagster.local.backfills import submit_backfill

pytestmark = pytest.mark.slow  # a real daemon and database

DEFS = Path(__file__).with_name("ranged_defs.py")
STEP = dg.AssetKey("ranged_step")


def test_the_gpu_pool_limit_is_set_in_the_database_by_the_documented_command(postgres_home):
    home, env = postgres_home
    out = subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "gpu", "16"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 16
        assert instance.get_concurrency_config().pool_config.default_pool_limit is None  # other pools: no cap


def test_two_ranged_runs_of_one_shard_wait_for_each_other(postgres_home, tmp_path):
    with dg.DagsterInstance.get() as instance, daemon_on(instance, DEFS, tmp_path) as workspace:
        first = submit_backfill(instance, workspace, {STEP: ["a", "b"]})   # one run over the range a..b
        second = submit_backfill(instance, workspace, {STEP: ["a"]})       # one run over a..a: same first shard

        def finished():
            runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
            return runs if len(runs) >= 2 else None

        runs = wait_for("both ranged runs", finished)
        by_backfill = {r.tags["dagster/backfill"]: r for r in runs}
        assert set(by_backfill) == {first, second}
        for run in runs:
            assert "dagster/partition" not in run.tags  # the range tags are all a backfill run carries
            assert run.tags["dagster/asset_partition_range_start"] == "a"
        assert by_backfill[first].tags["dagster/asset_partition_range_end"] == "b"
        spans = sorted(run_span(instance, r.run_id) for r in runs)
        assert spans[1][0] >= spans[0][1], spans  # the second started only after the first ended
