"""Usage, latency, cost and throughput of a run, as a flat dict for Dagster asset metadata."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pydantic import BaseModel, Field

from viscon_dagster.core.models.failures import is_systemic
from viscon_dagster.core.models.request import Response, Usage

# USD per million tokens (input, output), list prices; override in configuration for your contract.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
}


class PriceTable(BaseModel):
    """Per-model USD per million input/output tokens; batch calls get `batch_discount` off."""

    prices: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    batch_discount: float = 0.5

    def rate(self, model: str) -> tuple[float, float] | None:
        if model in self.prices:
            return self.prices[model]
        # dated snapshots ("gpt-4o-2024-08-06") price as their family: longest matching prefix
        best = max((k for k in self.prices if model.startswith(k + "-")), key=len, default=None)
        return self.prices[best] if best else None

    def cost(self, model: str, usage: Usage, batch: bool = False) -> float | None:
        """USD for one call; None when the model has no price (self-hosted: count tokens only)."""
        rate = self.rate(model)
        if rate is None:
            return None
        usd = (usage.prompt_tokens * rate[0] + usage.completion_tokens * rate[1]) / 1e6
        return usd * (1 - self.batch_discount) if batch else usd


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summarize(responses: Iterable[Response], prices: PriceTable | None = None, *, wall_s: float | None = None,
              remaining_partitions: int = 0, prefix: str = "model_") -> dict[str, float | int | str]:
    """Flat metadata for one partition's model calls.

    `usd_partition` prices every answer of the partition, journaled ones included (the partition's
    full cost); `usd_paid` only what this run paid. `usd_projected_remaining` extrapolates the
    partition's cost to `remaining_partitions` more like it.
    """
    prices = prices or PriceTable()
    rs = list(responses)
    fresh = [r for r in rs if not r.cached]
    statuses = Counter(r.status for r in rs)
    errors = Counter(r.error_kind or "unknown" for r in rs if r.status == "error")
    lat = [r.latency_s for r in fresh if r.status != "error"]
    models = sorted({r.model for r in rs})
    usd_all = usd_paid = 0.0
    priced = True
    for r in rs:
        c = prices.cost(r.model, r.usage, r.batch)
        if c is None:
            priced = False
            continue
        usd_all += c
        if not r.cached:
            usd_paid += c
    out: dict[str, float | int | str] = {
        "models": ", ".join(models),
        "requests": len(rs),
        "requests_sent": len(fresh),
        "requests_journaled": len(rs) - len(fresh),
        "http_calls": sum(r.attempts for r in fresh),
        "ok": statuses.get("ok", 0),
        "refused": statuses.get("refused", 0),
        "unparsable": statuses.get("unparsable", 0),
        "errors": statuses.get("error", 0),
        "errors_systemic": sum(is_systemic(r) for r in rs),  # tolerated by max_failure_fraction, else it failed
        "tokens_in": sum(r.usage.prompt_tokens for r in rs),
        "tokens_out": sum(r.usage.completion_tokens for r in rs),
        "tokens_in_paid": sum(r.usage.prompt_tokens for r in fresh),
        "tokens_out_paid": sum(r.usage.completion_tokens for r in fresh),
        "latency_p50_s": round(percentile(lat, 50), 4),
        "latency_p95_s": round(percentile(lat, 95), 4),
        "usd_partition": round(usd_all, 6),
        "usd_paid": round(usd_paid, 6),
        "usd_projected_remaining": round(usd_all * remaining_partitions, 4),
        "priced": "yes" if priced else "partly or not (models without a price count tokens only)",
    }
    for kind, n in sorted(errors.items()):
        out[f"errors_{kind}"] = n
    if wall_s:
        out["wall_s"] = round(wall_s, 3)
        out["requests_per_s"] = round(len(fresh) / wall_s, 3) if wall_s > 0 else 0.0
    return {prefix + k: v for k, v in out.items()}
