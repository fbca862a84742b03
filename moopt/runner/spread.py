"""Means over seeds as text: with their spread where there is one to show, alone where a
single seed was run (a ``± 0`` would claim a spread of zero that nobody measured).

Example:
    >>> from moopt.runner.spread import format_mean
    >>> format_mean(0.5123, 0.031, 3), format_mean(0.5123, 0.0, 1)
    ('0.5123 ± 0.031', '0.5123')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_mean(mean: float, std: float | None, n: int | None, *, digits: int = 4,
                scale: float = 1.0, sep: str = " ± ") -> str:
    """``mean ± std`` (``digits`` significant digits, the spread 2) when ``n >= 2``, else
    the mean alone; both multiplied by ``scale`` (100 for percentages)."""
    text = f"{mean * scale:.{digits}g}"
    if n is None or n < 2 or std is None:
        return text
    return f"{text}{sep}{std * scale:.2g}"


def row_mean(row: Mapping[str, Any], metric: str, **kwargs: Any) -> str:
    """:func:`format_mean` of ``metric`` in an aggregated comparison row (``<metric>_mean``,
    ``<metric>_std``, ``n``); ``"-"`` when the row lacks the metric."""
    if metric + "_mean" not in row:
        return "-"
    return format_mean(row[metric + "_mean"], row.get(metric + "_std"), row.get("n"), **kwargs)


def mean_and_spread(row: Mapping[str, Any], metric: str) -> str:
    """For one-line summaries: ``0.52±0.03``, or ``0.52 (n=1)`` for a single seed."""
    n = row.get("n")
    text = row_mean(row, metric, sep="±")
    return text if n is not None and n >= 2 else f"{text} (n={n or 1})"
