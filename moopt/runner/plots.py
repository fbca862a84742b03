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


def plot_losses(losses: Mapping[str, list[tuple[int, float]]], path: Path) -> Path:
    """Training loss of each objective over steps (raw and a moving average)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in sorted(losses.items()):
        steps = [s for s, _ in points]
        vals = [v for _, v in points]
        line = ax.plot(steps, vals, alpha=0.25, lw=0.8)[0]
        window = max(1, len(vals) // 20)
        ax.plot(steps, _smooth(vals, window), color=line.get_color(), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_evals(evals: list[tuple[int, dict[str, float]]], path: Path, metrics: list[str]) -> Path:
    """One small panel per metric: its value at every evaluation step."""
    plt = require_matplotlib()
    n = len(metrics)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, metrics):
        pts = [(s, m[name]) for s, m in evals if name in m]
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tradeoff(
    points: list[dict[str, Any]], x: str, y: str, path: Path, *, group_key: str = "group"
) -> Path:
    """Metric ``y`` against metric ``x``: one point per config (mean over seeds, error bars
    one standard deviation), coloured by ``point[group_key]``, labelled by ``point["label"]``."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    colors: dict[str, str] = {}
    for p in points:
        group = str(p[group_key])
        kwargs = {"color": colors[group]} if group in colors else {"label": group}
        bars = ax.errorbar(p[x + "_mean"], p[y + "_mean"], xerr=p[x + "_std"],
                           yerr=p[y + "_std"], fmt="o", capsize=3, **kwargs)
        colors.setdefault(group, bars[0].get_color())
        # Colour names the group; the annotation only needs what differs inside it.
        text = f"lr={p['lr']:g}" if "lr" in p else str(p.get("label", ""))
        ax.annotate(text, (p[x + "_mean"], p[y + "_mean"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lr_spread(points: list[dict[str, Any]], metrics: list[str], path: Path) -> Path:
    """Each metric against the learning rate (log scale), one line per group, error bars one
    standard deviation over seeds: how sensitive each policy is to the learning rate."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    groups = sorted({str(p["group"]) for p in points})
    for ax, metric in zip(axes[0], metrics):
        for group in groups:
            pts = sorted((p for p in points if str(p["group"]) == group), key=lambda p: p["lr"])
            ax.errorbar([p["lr"] for p in pts], [p[metric + "_mean"] for p in pts],
                        yerr=[p[metric + "_std"] for p in pts], marker="o", capsize=3,
                        label=group)
        ax.set_xscale("log")
        ax.set_xlabel("lr")
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
