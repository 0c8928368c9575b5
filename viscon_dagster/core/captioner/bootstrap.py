"""Bootstrap intervals over held-out items, and paired comparisons of two systems on the same resamples.

Every metric of the scorecard is a statistic of per-item values: a mean (sentence BLEU, CIDEr-D, a rate), a
ratio of sums (faithfulness: supported / asserted, over all captions) or corpus BLEU (a function of summed
per-sentence statistics). One matrix of resampled item indices is drawn per evaluation, and every system is
scored on the same rows, so a difference between two systems is paired: its interval is the percentile
interval of the per-resample differences, and its one-sided p-value the share of resamples in which the
difference does not go the better way (as sacrebleu's paired bootstrap does for BLEU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    @classmethod
    def of(cls, value: float, samples: np.ndarray) -> Interval:
        lo, hi = np.percentile(samples, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
        return cls(round(float(value), 4), round(float(lo), 4), round(float(hi), 4))

    def excludes(self, x: float) -> bool:
        return self.low > x or self.high < x


@dataclass(frozen=True)
class Paired:
    """A - B on the same resamples: the difference, its interval, the one-sided p-value of "A is better"."""

    diff: Interval
    p_value: float | None  # None for a metric with no better direction (length)
    significant: bool  # the interval excludes zero, in the better direction

    def as_dict(self) -> dict:
        return {"diff": self.diff.__dict__, "p_value": self.p_value, "significant": self.significant}


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    if n < 1:
        raise ValueError("no items to resample")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


@dataclass(frozen=True)
class Statistic:
    """A statistic of per-item values: `point()` on all items, `resampled(idx)` per row of `idx`."""

    point: Callable[[], float]
    resampled: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def mean(cls, values) -> Statistic:
        v = np.asarray(values, dtype=np.float64)
        return cls(lambda: float(v.mean()), lambda idx: v[idx].mean(axis=1))

    @classmethod
    def ratio(cls, numerator, denominator) -> Statistic:
        """sum(numerator) / sum(denominator) over the items (NaN where the denominator sums to 0)."""
        a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)

        def ratio(x, y):
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(y > 0, x / np.where(y > 0, y, 1), np.nan)

        return cls(lambda: float(ratio(a.sum(), b.sum())), lambda idx: ratio(a[idx].sum(axis=1), b[idx].sum(axis=1)))


def interval(stat: Statistic, idx: np.ndarray) -> Interval:
    """The point value and the percentile interval of the resamples where the statistic is defined (a ratio
    with nothing in its denominator is not); NaN throughout when it is defined nowhere."""
    samples = stat.resampled(idx)
    samples = samples[~np.isnan(samples)]
    point = stat.point()
    if samples.size == 0 or np.isnan(point):
        return Interval(float("nan"), float("nan"), float("nan"))
    return Interval.of(point, samples)


def paired(a: Statistic, b: Statistic, idx: np.ndarray, better: str | None) -> Paired:
    """Compare A with B; `better` is "higher", "lower" or None (a difference with no good direction)."""
    d = a.resampled(idx) - b.resampled(idx)
    d = d[~np.isnan(d)]
    point = a.point() - b.point()
    if d.size == 0 or np.isnan(point):
        nan = Interval(float("nan"), float("nan"), float("nan"))
        return Paired(nan, None, False)
    diff = Interval.of(point, d)
    if better is None:
        return Paired(diff, None, False)
    if better == "higher":
        return Paired(diff, round(float(np.mean(d <= 0)), 4), diff.low > 0)
    return Paired(diff, round(float(np.mean(d >= 0)), 4), diff.high < 0)
