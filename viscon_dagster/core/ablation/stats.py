"""The ablation's statistics, on per-item correctness (every mix scored on the same items, so tests are paired).

* accuracy with a 95% percentile bootstrap interval over items (seeded);
* McNemar's exact test for two mixes: on the discordant items (one right, the other wrong), the count one way is
  Binomial(n_discordant, 1/2) under "no difference" — `scipy.stats.binomtest`, two-sided;
* Holm's step-down correction over the whole family of comparisons (leaky vs each other mix, each mix vs base);
* Kendall's τ-b (`scipy.stats.kendalltau`) between the measured ordering and the paper's ranks (ties in the
  paper's ranks, where it does not order two mixes, count neither for nor against).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Accuracy:
    correct: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else float("nan")


def accuracy(correct: Sequence[bool], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Accuracy:
    x = np.asarray(correct, dtype=float)
    if not len(x):
        return Accuracy(0, 0, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(x))  # bounded memory on a 14K-item benchmark
    means = np.concatenate([x[rng.integers(0, len(x), size=(min(chunk, resamples - start), len(x)))].mean(axis=1)
                            for start in range(0, resamples, chunk)])
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Accuracy(int(x.sum()), len(x), float(low), float(high))


@dataclass(frozen=True)
class McNemar:
    a_only: int  # items the first mix gets right and the second wrong
    b_only: int  # the other way round
    p_value: float

    @property
    def discordant(self) -> int:
        return self.a_only + self.b_only


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """McNemar's exact test on paired per-item correctness (two-sided)."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError(f"paired test on {len(a)} and {len(b)} items: the mixes were scored on different items")
    a_only = int(sum(x and not y for x, y in zip(a, b)))
    b_only = int(sum(y and not x for x, y in zip(a, b)))
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)
    return McNemar(a_only, b_only, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, made monotone, capped at 1), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def kendall_tau(measured: dict[str, float], paper_rank: dict[str, int]) -> tuple[float | None, int]:
    """τ-b between the measured accuracies and the paper's ranks (1 = best) over the mixes both have; (τ, mixes).
    None when fewer than two of them or when either side puts them all level."""
    from scipy.stats import kendalltau

    common = [m for m in measured if m in paper_rank]
    if len(common) < 2:
        return None, len(common)
    tau = kendalltau([measured[m] for m in common], [-paper_rank[m] for m in common]).statistic
    return (None if tau is None or np.isnan(tau) else float(tau)), len(common)
