import pytest

from viscon_dagster.core.models.accounting import PriceTable, percentile, summarize
from viscon_dagster.core.models.request import Response, Usage


def r(status="ok", cached=False, batch=False, model="gpt-4o", latency=1.0, kind=None, tin=1000, tout=100):
    return Response(fingerprint="f", model=model, backend="b", status=status, cached=cached, batch=batch,
                    latency_s=latency, error_kind=kind, usage=Usage(prompt_tokens=tin, completion_tokens=tout))


def test_prices_batch_discount_and_dated_snapshots():
    t = PriceTable()
    assert t.cost("gpt-4o", Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)) == pytest.approx(12.5)
    assert t.cost("gpt-4o-2024-08-06", Usage(prompt_tokens=1_000_000)) == pytest.approx(2.5)
    assert t.cost("gpt-4o-mini", Usage(prompt_tokens=1_000_000), batch=True) == pytest.approx(0.075)
    assert t.cost("my-local-vlm", Usage(prompt_tokens=10)) is None


def test_percentiles():
    assert percentile([], 50) == 0.0
    assert percentile([1, 2, 3, 4], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 95) == pytest.approx(95)


def test_summary_is_flat_and_counts_everything():
    rs = [r(latency=0.1), r(latency=0.3), r(cached=True, latency=9), r(status="refused", kind="refusal"),
          r(status="error", kind="rate_limited", tin=0, tout=0), r(status="error", kind="timeout", tin=0, tout=0),
          r(batch=True)]
    md = summarize(rs, PriceTable(), wall_s=2.0, remaining_partitions=10)
    assert all(isinstance(v, (int, float, str)) for v in md.values())
    assert md["model_requests"] == 7 and md["model_requests_sent"] == 6 and md["model_requests_journaled"] == 1
    assert (md["model_ok"], md["model_refused"], md["model_errors"]) == (4, 1, 2)
    assert md["model_errors_rate_limited"] == 1 and md["model_errors_timeout"] == 1
    assert md["model_tokens_in"] == 5000 and md["model_tokens_in_paid"] == 4000
    one = (1000 * 2.5 + 100 * 10) / 1e6
    assert md["model_usd_partition"] == pytest.approx(4.5 * one, abs=1e-6)  # batch call at half price
    assert md["model_usd_paid"] == pytest.approx(3.5 * one, abs=1e-6)
    assert md["model_usd_projected_remaining"] == pytest.approx(45 * one, abs=1e-4)
    assert md["model_latency_p50_s"] == pytest.approx(0.65)  # of 0.1, 0.3, 1, 1: the journaled 9 s is not this run's
    assert md["model_requests_per_s"] == 3.0
