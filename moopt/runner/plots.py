"""PNG plots of runs and comparisons (matplotlib, imported lazily: ``pip install moopt[plots]``).

Example:
    >>> import tempfile, pathlib
    >>> from moopt.runner.plots import plot_losses
    >>> png = pathlib.Path(tempfile.mkdtemp()) / "loss.png"
    >>> plot_losses({"a": [(1, 2.0), (2, 1.0)]}, png).name
    'loss.png'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend, or a clear ImportError."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plots need matplotlib: pip install moopt[plots] (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


# A panel's y axis is logarithmic when its positive values span at least this ratio (about
# one and a half decades): below it a linear axis reads better, above it the small end of
# the curve (a retain loss near 0.05 beside a forget loss of 3) becomes a flat line.
LOG_SPAN = 30.0


def axis_scale(values: Sequence[float], span: float = LOG_SPAN) -> str:
    """``"log"`` when every value is positive and ``max / min >= span``, else ``"linear"``.

    Example:
        >>> axis_scale([3.0, 1.0, 0.05]), axis_scale([3.0, 2.0]), axis_scale([1.0, -2.0])
        ('log', 'linear', 'linear')
    """
    vals = [v for v in values if v == v]  # NaN says nothing about the scale
    if not vals or min(vals) <= 0:
        return "linear"
    return "log" if max(vals) / min(vals) >= span else "linear"


def varying_metrics(evals: Sequence[tuple[int, Mapping[str, float]]],
                    metrics: Sequence[str]) -> list[str]:
    """The metrics whose value changes between evaluations (a constant needs no panel).

    Example:
        >>> varying_metrics([(1, {"a": 1.0, "b": 2.0}), (2, {"a": 1.0, "b": 3.0})], ["a", "b"])
        ['b']
    """
    out = []
    for name in metrics:
        vals = [m[name] for _, m in evals if name in m]
        if len(vals) > 1 and max(vals) - min(vals) > 1e-12 * max(1.0, *map(abs, vals)):
            out.append(name)
    return out


def legend_outside(ax: Any, *, below: bool = False, **kwargs: Any) -> Any:
    """A legend right of the axes (or ``below`` them, where a colour bar takes the right),
    where it cannot cover data; ``None`` when there is nothing to label. Save the figure
    with ``bbox_inches="tight"`` so that it is not cut off."""
    handles, _ = ax.get_legend_handles_labels()
    if not handles and "handles" not in kwargs:
        return None
    kwargs.setdefault("fontsize", 8)
    if below:
        n = len(kwargs.get("handles", handles))
        return ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15),
                         ncol=min(3, n), **kwargs)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                     **kwargs)


def plot_losses(losses: Mapping[str, list[tuple[int, float]]], path: Path) -> Path:
    """Training loss of each objective over steps (raw and a moving average), one panel per
    objective with its own y axis (objectives' losses differ by decades), logarithmic where
    the panel's values span decades (:func:`axis_scale`)."""
    plt = require_matplotlib()
    names = sorted(losses)
    fig, axes = plt.subplots(len(names), 1, figsize=(6, 1.1 + 1.6 * len(names)),
                             sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        steps = [s for s, _ in losses[name]]
        vals = [v for _, v in losses[name]]
        line = ax.plot(steps, vals, alpha=0.25, lw=0.8)[0]
        window = max(1, len(vals) // 20)
        ax.plot(steps, _smooth(vals, window), color=line.get_color())
        ax.set_yscale(axis_scale(vals))
        ax.set_ylabel(f"{name} loss", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_evals(evals: list[tuple[int, dict[str, float]]], path: Path,
               metrics: list[str], *, max_panels: int = 12) -> Path | None:
    """One small panel per metric that changes between evaluations (at most
    ``max_panels``): its value at every evaluation step. Constants get no panel (their value
    is in the report's table); with none left nothing is drawn and ``None`` returned."""
    shown = varying_metrics(evals, metrics)[:max_panels]
    if not shown:
        return None
    plt = require_matplotlib()
    n = len(shown)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, shown):
        pts = [(s, m[name]) for s, m in evals if name in m]
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3)
        ax.set_yscale(axis_scale([v for _, v in pts]))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def interval_bars(p: Mapping[str, Any], metric: str) -> tuple[float, float] | None:
    """The error bar of a point as (below, above) its mean: the 95 % bootstrap interval
    over seeds (``<metric>_low`` / ``_high``, asymmetric); ``None`` for a single seed or a
    point without an interval."""
    low, high = p.get(metric + "_low"), p.get(metric + "_high")
    if p.get("n", 2) < 2 or low is None or high is None:
        return None
    mean = p[metric + "_mean"]
    return max(mean - low, 0.0), max(high - mean, 0.0)


def error_bars(errors: Sequence[tuple[float, float] | None]) -> list[list[float]] | None:
    """``errors`` in matplotlib's (2, N) form; ``None`` when any point has none."""
    if not errors or any(e is None for e in errors):
        return None
    return [[e[0] for e in errors], [e[1] for e in errors]]  # type: ignore[index]


def seeds_note(points: Sequence[Mapping[str, Any]]) -> str:
    """How many seeds each point averages: ``"n = 1 seed, no error bars"`` or ``"mean, 95 %
    interval over n = 3 seeds"`` (a range when the points differ)."""
    ns = sorted({int(p.get("n", 1)) for p in points}) or [1]
    if ns == [1]:
        return "n = 1 seed, no error bars"
    n = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    return f"mean, 95 % bootstrap interval over n = {n} seeds"


def plot_tradeoff(
    points: list[dict[str, Any]], x: str, y: str, path: Path, *, group_key: str = "group"
) -> Path:
    """Metric ``y`` against metric ``x``: one point per config (mean over seeds, error bars
    its 95 % bootstrap interval; none for a single seed, and the title says n = 1), coloured by
    ``point[group_key]``, labelled by ``point["label"]``; the legend sits outside the axes."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colors: dict[str, str] = {}
    for p in points:
        group = str(p[group_key])
        kwargs = {"color": colors[group]} if group in colors else {"label": group}
        bars = ax.errorbar(p[x + "_mean"], p[y + "_mean"],
                           xerr=error_bars([interval_bars(p, x)]),
                           yerr=error_bars([interval_bars(p, y)]), fmt="o", capsize=3, **kwargs)
        colors.setdefault(group, bars[0].get_color())
        # Colour names the group; the annotation only needs what differs inside it.
        text = f"lr={p['lr']:g}" if "lr" in p else str(p.get("label", ""))
        ax.annotate(text, (p[x + "_mean"], p[y + "_mean"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.set_title(seeds_note(points), fontsize=9)
    legend_outside(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_lr_spread(points: list[dict[str, Any]], metrics: list[str], path: Path) -> Path:
    """Each metric against the learning rate (log scale), one line per group, error bars the
    95 % bootstrap interval over seeds: how sensitive each policy is to the learning rate."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    groups = sorted({str(p["group"]) for p in points})
    for ax, metric in zip(axes[0], metrics):
        for group in groups:
            pts = sorted((p for p in points if str(p["group"]) == group), key=lambda p: p["lr"])
            ax.errorbar([p["lr"] for p in pts], [p[metric + "_mean"] for p in pts],
                        yerr=error_bars([interval_bars(p, metric) for p in pts]), marker="o",
                        capsize=3, label=group)
        ax.set_xscale("log")
        ax.set_xlabel("lr")
        ax.set_title(f"{metric} ({seeds_note(points)})", fontsize=9)
        ax.grid(alpha=0.3)
    legend_outside(axes[0][-1])
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
