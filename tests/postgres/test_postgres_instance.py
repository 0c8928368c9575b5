"""deploy/dagster.yaml on a real PostgreSQL server: the instance builds from the template's config unchanged,
and a backfill of the shard chain driven by a real `dagster-daemon` (launched through the webserver's GraphQL
API, as the UI does) materializes every shard; the results are read back from Postgres and the storage."""

from __future__ import annotations

import json
import os
import subprocess

import dagster as dg
import pyarrow.parquet as pq
import pytest

from tests.chain.scripted_openai import ScriptedOpenAI
from tests.postgres.services import BIN, dagster_services, launch_asset_backfill, partition_status, wait_for_backfill

pytestmark = [pytest.mark.timeout(1500), pytest.mark.slow]  # a real PostgreSQL server and daemon: the slow tier

# the shard_chain job's assets (definitions.py), in dependency order
CHAIN = ["filtered_docs", "images", "captions", "qa_pairs", "unique_qa_pairs", "conversations"]


def test_the_template_builds_a_postgres_instance(postgres_home):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_monitoring_enabled
        instance.add_dynamic_partitions("obelics_shards", ["shard-a", "shard-b"])
    with dg.DagsterInstance.get() as again:  # a second process-like instance sees what the first wrote
        assert again.get_dynamic_partitions("obelics_shards") == ["shard-a", "shard-b"]


def test_a_daemon_backfill_of_the_chain_on_postgres(postgres_home, tmp_path, sample_dir, tokenizer_dir):
    home, pg_env = postgres_home
    server = ScriptedOpenAI()
    base_url = server.start()
    store = tmp_path / "store"
    env = {**pg_env, "DAGSTER_HOME": str(home), "VISCON_STORAGE_ROOT": store.as_uri(),
           "VISCON_TOKENIZER": str(tokenizer_dir), "VISCON_IMAGE_FILE_ROOTS": str(sample_dir / "images"),
           "OPENAI_API_KEY": "test-key",
           "VISCON_EXECUTOR": "in_process",  # the instance is under test here; steps skip ~5 s of imports each
           **{f"VISCON_{role}_{k}": v for role, model in [("CAPTION", "scripted-vlm"), ("QA", "scripted-llm")]
              for k, v in [("BACKEND", "openai"), ("MODEL", model), ("BASE_URL", base_url),
                           ("OPTIONS", json.dumps({"max_concurrency": 8}))]}}
    try:
        registered = subprocess.run([str(BIN / "viscon"), "shards", "register", str(sample_dir / "shards")],
                                    env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
        assert registered.returncode == 0, registered.stderr[-2000:]
        with dg.DagsterInstance.get() as instance:
            shards = sorted(instance.get_dynamic_partitions("obelics_shards"))
        assert len(shards) == 2

        with dagster_services(env, tmp_path) as url:
            backfill_id = launch_asset_backfill(url, CHAIN, shards)
            backfill = wait_for_backfill(url, backfill_id, timeout_s=1200)
            assert backfill["status"] == "COMPLETED_SUCCESS", (backfill, (tmp_path / "daemon.log").read_text()[-4000:])
            status = partition_status(url, "conversations")
            assert sorted(status["materializedPartitions"]) == shards and not status["failedPartitions"]
    finally:
        server.stop()

    with dg.DagsterInstance.get() as instance:
        for asset in CHAIN:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(shards), asset
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # one run per shard, or ranges of shards under BackfillPolicy.multi_run
        covered = {r.tags.get("dagster/partition") or
                   (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
                   for r in runs}
        assert covered in ({*shards}, {(shards[0], shards[-1])}), covered
    for shard in shards:
        assert pq.read_table(store / "conversations" / f"{shard}.parquet").num_rows > 0
        assert pq.read_table(store / "captions" / f"{shard}.parquet").num_rows > 0
    assert server.requests > 0  # the captions and Q&A really went to the model server
