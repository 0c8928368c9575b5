"""The automation conditions, evaluated as the automation sensors evaluate them (in process, at chosen times):
CPU stages of new shards at once, model stages only inside the GPU window, the release after its cron tick
and only when a shard changed."""

import datetime as dt

import dagster as dg
import pytest

from viscon_dagster.partitions import obelics_shards

UTC = dt.UTC
MONDAY = dt.datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: the default release cron ticks at 03:00


@pytest.fixture
def defs(monkeypatch):
    monkeypatch.setenv("VISCON_GPU_WINDOW", "0 22 * * *|0 6 * * *")
    monkeypatch.setenv("VISCON_RELEASE_CRON", "0 3 * * 1")
    from viscon_dagster.definitions import build_definitions

    return build_definitions()


class Evaluator:
    def __init__(self, defs, instance):
        self.defs, self.instance, self.cursor = defs, instance, None
        self.selection = dg.AssetSelection.groups("viscon_100k")

    def at(self, when: dt.datetime) -> dict[str, set]:
        result = dg.evaluate_automation_conditions(self.defs, self.instance, asset_selection=self.selection,
                                                   evaluation_time=when, cursor=self.cursor)
        self.cursor = result.cursor
        keys = {r.key for r in result.results if isinstance(r.key, dg.AssetKey)}
        return {k.to_user_string(): set(result.get_requested_partitions(k)) for k in keys
                if result.get_num_requested(k)}

    def materialize(self, name: str, *partitions: str | None) -> None:
        for p in partitions:
            self.instance.report_runless_asset_event(dg.AssetMaterialization(name, partition=p))


@pytest.mark.slow
def test_new_shards_run_their_cpu_stages_at_once_and_model_stages_in_the_window(defs):
    with dg.instance_for_test() as instance:
        ev = Evaluator(defs, instance)
        instance.add_dynamic_partitions(obelics_shards.name, ["old"])
        assert ev.at(MONDAY.replace(hour=12)) == {}  # shards present when automation starts: `viscon backfill`
        instance.add_dynamic_partitions(obelics_shards.name, ["new"])
        # one stage per tick: a stage waits until its inputs are materialized, not merely requested, so no
        # automation backfill holds an asset with its parent (automation._inputs_ready says why)
        assert ev.at(MONDAY.replace(hour=12, minute=5)) == {"filtered_docs": {"new"}}
        ev.materialize("filtered_docs", "new")
        assert ev.at(MONDAY.replace(hour=12, minute=6)) == {"images": {"new"}}
        ev.materialize("images", "new")
        assert ev.at(MONDAY.replace(hour=13)) == {}  # inputs exist, but the GPU window is closed
        for minute, stage in ((30, "captions"), (31, "qa_pairs"), (32, "unique_qa_pairs"), (33, "conversations")):
            assert ev.at(MONDAY.replace(hour=22, minute=minute)) == {stage: {"new"}}  # the rest of the chain
            ev.materialize(stage, "new")
        instance.add_dynamic_partitions(obelics_shards.name, ["late"])
        ev.materialize("filtered_docs", "late")
        ev.materialize("images", "late")
        # a shard registered after the window opened waits for the next opening (the window is per shard)
        assert ev.at(MONDAY.replace(hour=23)) == {}
        assert ev.at(MONDAY + dt.timedelta(days=1, hours=7)) == {}  # closed at 06:00
        assert ev.at(MONDAY + dt.timedelta(days=1, hours=22, minutes=30)) == {"captions": {"late"}}


def test_the_release_follows_its_cron_only_when_shards_changed(defs):
    with dg.instance_for_test() as instance:
        ev = Evaluator(defs, instance)
        ev.selection = dg.AssetSelection.assets("viscon_100k_release")
        instance.add_dynamic_partitions(obelics_shards.name, ["s1"])
        assert ev.at(MONDAY.replace(hour=1)) == {}
        ev.materialize("conversations", "s1")
        ev.materialize("unique_qa_pairs", "s1")
        assert ev.at(MONDAY.replace(hour=2)) == {}  # changed, but before the tick
        assert ev.at(MONDAY.replace(hour=3, minute=10)) == {"viscon_100k_release": {None}}
        ev.materialize("viscon_100k_release", None)
        next_week = MONDAY + dt.timedelta(days=7)
        assert ev.at(next_week.replace(hour=2)) == {}
        assert ev.at(next_week.replace(hour=3, minute=10)) == {}  # nothing changed: no new release


@pytest.mark.slow
def test_a_failed_gpu_partition_waits_for_the_next_window(defs):
    """Requested once per window opening: a shard whose model stage failed (nothing materialized) is not asked
    again at every tick of that window, only after the next opening (or by a manual backfill)."""
    with dg.instance_for_test() as instance:
        ev = Evaluator(defs, instance)
        ev.at(MONDAY.replace(hour=12))
        instance.add_dynamic_partitions(obelics_shards.name, ["s"])
        ev.at(MONDAY.replace(hour=12, minute=5))
        ev.materialize("filtered_docs", "s")
        ev.materialize("images", "s")
        opened = ev.at(MONDAY.replace(hour=22, minute=1))
        assert opened["captions"] == {"s"}
        # its backfill failed: captions still missing, nothing in progress, the window still open
        for minute in (2, 3, 30):
            assert ev.at(MONDAY.replace(hour=22, minute=minute)) == {}
        assert ev.at(MONDAY + dt.timedelta(days=1, hours=5)) == {}
        assert ev.at(MONDAY + dt.timedelta(days=1, hours=22, minutes=1))["captions"] == {"s"}  # the next window
