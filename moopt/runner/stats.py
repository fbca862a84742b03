"""Statistics over seeds for ``moopt compare``: means with bootstrap intervals, paired
comparisons of two configurations on the same seeds, and learning-rate spreads.

Every function is pure: numbers in, numbers out, nothing read from the environment.

Intervals are **percentile bootstrap** intervals (``scipy.stats.bootstrap``,
``method="percentile"``): resample the seeds with replacement ``N_RESAMPLES`` = 9,999 times,
compute the statistic on each resample, and take the 2.5 % and 97.5 % quantiles (for the
default level of 95 %). Resampling is seeded (``SEED``) and the seeds' values are put in a
canonical (sorted) order first, so the same values give the same interval whatever order
the runs finished in. Percentile rather than BCa: BCa needs a jackknife acceleration
estimate that is unstable (and undefined for tied values) with the handful of seeds a
comparison has.

What a bootstrap over n seeds can and cannot say: it only ever sees the n values, so with
n = 5 a resampled mean takes at most 126 distinct values and the interval is narrower than
a t-interval (it tends to cover less than 95 %); with one seed there is no interval at all
(``low``/``high`` are ``None``). Paired comparisons add the Wilcoxon signed-rank test
(``scipy.stats.wilcoxon``, two-sided); its smallest possible p-value with n pairs is
``min_p_value(n)`` (0.0625 for n = 5), so with few seeds it can never reach 0.05.

Example:
    >>> from moopt.runner.stats import mean_interval, paired_difference
    >>> iv = mean_interval([0.80, 0.82, 0.85, 0.81, 0.83])
    >>> round(iv.estimate, 3), iv.n, iv.low <= iv.estimate <= iv.high
    (0.822, 5, True)
    >>> mean_interval([0.9]).low is None     # one seed: a value, no interval
    True
    >>> cmp = paired_difference([0.80, 0.82, 0.85, 0.81, 0.83], [0.90, 0.91, 0.93, 0.92, 0.95])
    >>> round(cmp.difference.estimate, 3), cmp.wins, cmp.covers_zero, cmp.p_value
    (0.1, 5, False, 0.0625)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
N_RESAMPLES = 9999
SEED = 0
METHOD = "percentile"

Statistic = Callable[..., Any]


@dataclass(frozen=True)
class Interval:
    """A statistic's value on all ``n`` seeds and its bootstrap interval ``[low, high]``
    (``None`` when there is none: fewer than 2 seeds, or a non-finite value)."""

    estimate: float
    low: float | None
    high: float | None
    n: int

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    def covers(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies in the interval; True without an interval (nothing rules
        any value out)."""
        if not self.has_interval:
            return True
        return self.low <= value <= self.high

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": self.n}


@dataclass(frozen=True)
class PairedComparison:
    """``other - baseline`` on the seeds both have: the mean difference with its interval,
    how many seeds went up (``wins``), down (``losses``) or stayed equal (``ties``), and the
    two-sided Wilcoxon signed-rank p-value (1 when every difference is 0; ``None`` without
    pairs). "wins" counts increases; whether higher is better is the caller's business."""

    difference: Interval
    wins: int
    losses: int
    ties: int
    p_value: float | None

    @property
    def covers_zero(self) -> bool:
        return self.difference.covers(0.0)

    def as_dict(self) -> dict[str, Any]:
        return {**self.difference.as_dict(), "wins": self.wins, "losses": self.losses,
                "ties": self.ties, "p_value": self.p_value, "covers_zero": self.covers_zero}


def _columns(columns: Sequence[Sequence[float]]) -> np.ndarray:
    """The paired samples as a float64 array of shape (k, n): k columns, n seeds."""
    arrays = [np.asarray(c, dtype=np.float64) for c in columns]
    if not arrays or any(a.ndim != 1 for a in arrays) or len({a.size for a in arrays}) != 1:
        shapes = [a.shape for a in arrays]
        raise ValueError(f"paired samples must be 1-d and of equal length, got shapes {shapes}")
    return np.stack(arrays)


def bootstrap_interval(
    columns: Sequence[Sequence[float]],
    statistic: Statistic,
    *,
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """``statistic(*columns, axis=-1)`` on the data and its percentile-bootstrap interval,
    resampling seeds (the columns' common index) jointly.

    ``columns``: k sequences of n values, entry i of each belonging to seed i.
    ``statistic`` must accept the k columns and an ``axis`` keyword and reduce along it
    (vectorised, as ``scipy.stats.bootstrap`` expects). The seeds are sorted into a
    canonical order before resampling, so permuting them does not change the result.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    data = _columns(columns)
    n = data.shape[1]
    if n == 0:
        raise ValueError("bootstrap_interval needs at least one seed, got none")
    order = np.lexsort(data[::-1])  # rows sorted by column 0, then 1, ...
    data = data[:, order]
    estimate = float(statistic(*data, axis=-1))
    if n < 2 or not np.all(np.isfinite(data)) or not np.isfinite(estimate):
        return Interval(estimate, None, None, n)
    if np.all(data == data[:, :1]):
        # Every seed gave the same values: every resample is the data itself.
        return Interval(estimate, estimate, estimate, n)
    from scipy.stats import bootstrap  # here, not at import: scipy.stats loads slowly

    res = bootstrap(tuple(data), statistic, n_resamples=n_resamples, vectorized=True,
                    paired=True, confidence_level=level, method=METHOD,
                    rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(estimate, low, high, n)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean along ``axis``; on the data itself (1-d) the exactly rounded sum
    (``math.fsum``), so differences that cancel give exactly 0 in any order."""
    if x.ndim == 1:
        return np.float64(math.fsum(x) / x.size)
    return np.mean(x, axis=axis)


def mean_interval(values: Sequence[float], **options: Any) -> Interval:
    """Mean over seeds with its bootstrap interval (options of :func:`bootstrap_interval`)."""
    return bootstrap_interval([values], _mean, **options)


def _mean_difference(baseline: np.ndarray, other: np.ndarray, axis: int = -1) -> np.ndarray:
    return _mean(other - baseline, axis=axis)


def signed_rank_p(differences: Sequence[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped, as
    Wilcoxon's test does); 1.0 when every difference is 0, ``None`` for no differences or
    non-finite ones."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0 or not np.all(np.isfinite(d)):
        return None
    if np.all(d == 0):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(d).pvalue)


def min_p_value(n: int) -> float:
    """The smallest two-sided p-value the signed-rank test can give with ``n`` pairs (all
    differences of one sign): what ``n`` seeds can show at best."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    from scipy.stats import wilcoxon

    return float(wilcoxon(np.arange(1.0, n + 1.0)).pvalue)


def paired_difference(
    baseline: Sequence[float], other: Sequence[float], **options: Any
) -> PairedComparison:
    """``other - baseline`` where entry i of both comes from seed i: mean difference with
    its bootstrap interval, the counts of increases / decreases / ties, and the Wilcoxon
    signed-rank p-value. Options as :func:`bootstrap_interval`."""
    a, b = _columns([baseline, other])
    interval = bootstrap_interval([a, b], _mean_difference, **options)
    d = b - a
    return PairedComparison(interval, wins=int(np.sum(d > 0)), losses=int(np.sum(d < 0)),
                            ties=int(np.sum(d == 0)), p_value=signed_rank_p(d))


def _spread(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
    """max - min over the columns (learning rates) of their means over ``axis`` (seeds)."""
    means = np.stack([np.mean(c, axis=axis) for c in columns])
    return means.max(axis=0) - means.min(axis=0)


def _table(table: Sequence[Sequence[float]], what: str) -> list[np.ndarray]:
    """A (seeds x lrs) table as one column per learning rate."""
    arr = np.asarray(table, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < 2:
        raise ValueError(f"{what} must be a table of seeds x learning rates with at least one "
                         f"seed and two learning rates, got shape {arr.shape}")
    return list(arr.T)


def spread_interval(table: Sequence[Sequence[float]], **options: Any) -> Interval:
    """Learning-rate sensitivity of one configuration: max - min over learning rates of the
    per-lr mean over seeds, with a bootstrap interval that resamples seeds (the same seeds
    for every lr). ``table[i][j]``: seed i at lr j. Noise inflates the spread of means, so a
    configuration with noisier runs looks more sensitive than it is."""
    return bootstrap_interval(_table(table, "table"), _spread, **options)


def paired_spread_difference(
    baseline: Sequence[Sequence[float]], other: Sequence[Sequence[float]], **options: Any
) -> Interval:
    """``spread(other) - spread(baseline)`` (see :func:`spread_interval`), both tables on
    the same seeds and learning rates; the bootstrap resamples seeds jointly for both."""
    a, b = _table(baseline, "baseline"), _table(other, "other")
    if len(a) != len(b) or len(a[0]) != len(b[0]):
        raise ValueError(f"the tables differ in shape: {len(a[0])}x{len(a)} vs "
                         f"{len(b[0])}x{len(b)} (seeds x lrs)")
    k = len(a)

    def statistic(*columns: np.ndarray, axis: int = -1) -> np.ndarray:
        return _spread(*columns[k:], axis=axis) - _spread(*columns[:k], axis=axis)

    return bootstrap_interval(a + b, statistic, **options)
