"""GC settings for high-rate request loops: applied during a backend call, always undone after it."""

import gc

import pytest

from viscon_dagster.core.models.gc_tuning import gc_tuned_for_throughput
from viscon_dagster.core.models.request import Request
from viscon_dagster.resources.models import OpenAIHTTPBackend


def test_settings_apply_inside_and_are_undone():
    before = gc.get_threshold()
    alive = [object() for _ in range(10)]
    with gc_tuned_for_throughput(young_threshold=12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() >= len(alive)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_nested_uses_keep_the_outer_settings_until_the_last_exits():
    before = gc.get_threshold()
    with gc_tuned_for_throughput(young_threshold=20_000):
        with gc_tuned_for_throughput(young_threshold=30_000):
            assert gc.get_threshold()[0] == 20_000
        assert gc.get_threshold()[0] == 20_000 and gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_undone_when_the_block_raises():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError):
        with gc_tuned_for_throughput():
            raise RuntimeError("boom")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


@pytest.mark.parametrize("tune", [True, False])
def test_backend_call_tunes_gc_only_while_it_runs(double, tune):
    before = gc.get_threshold()
    seen = []
    b = OpenAIHTTPBackend(model="gpt-4o-mini", base_url=double.base_url, api_key="sk-test", tune_gc=tune)
    out = b.generate([Request.user(f"g{i}") for i in range(3)],
                     on_response=lambda r: seen.append((gc.get_threshold()[0], gc.get_freeze_count())))
    assert [r.status for r in out] == ["ok"] * 3 and len(seen) == 3
    if tune:
        assert all(t == 50_000 and frozen > 0 for t, frozen in seen)
    else:
        assert all(t == before[0] and frozen == 0 for t, frozen in seen)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_an_existing_freeze_is_left_in_place():
    gc.freeze()  # as a pre-forking server might have done
    try:
        frozen = gc.get_freeze_count()  # frozen objects can still die by refcount: compare loosely
        with gc_tuned_for_throughput():
            assert gc.get_freeze_count() > frozen // 2
        assert gc.get_freeze_count() > frozen // 2 > 0
    finally:
        gc.unfreeze()
