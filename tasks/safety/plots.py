"""The three-way trade-off plot of a ``moopt compare safety`` grid.

x = over-refusal rate (lower is better), y = refusal rate on harmful prompts (higher is
better), colour = utility (ROUGE-L recall); one marker shape per policy/storage group, the
learning rate written beside each point, error bars = sample standard deviation over seeds.
The best corner is the top left, in yellow.

The generic comparison report plots two metrics; until the runner offers a hook for task
plots, draw this one from a finished comparison with
``python -m moopt.tasks.safety.plots OUT`` (writes ``OUT/tradeoff3.png``).

Example:
    >>> import tempfile, pathlib
    >>> from moopt.tasks.safety.plots import plot_refusal_tradeoff
    >>> rows = [{"group": "bridged-fp32", "lr": 1e-3, "refusal_rate_mean": 0.9,
    ...          "refusal_rate_std": 0.05, "over_refusal_rate_mean": 0.2,
    ...          "over_refusal_rate_std": 0.1, "utility_mean": 0.6}]
    >>> png = pathlib.Path(tempfile.mkdtemp()) / "t.png"
    >>> plot_refusal_tradeoff(rows, png).name
    't.png'
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_MARKERS = "osD^vP*Xh<>"


def plot_refusal_tradeoff(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Draw the aggregates of a comparison (``results.json["aggregates"]``) into ``path``."""
    from moopt.runner.plots import (
        error_bars,
        interval_bars,
        legend_outside,
        require_matplotlib,
        seeds_note,
    )

    plt = require_matplotlib()
    need = ("refusal_rate_mean", "over_refusal_rate_mean", "utility_mean")
    rows = [r for r in rows if all(k in r for k in need)]
    if not rows:
        raise ValueError(f"no comparison row has all of {need}")
    groups = sorted({r["group"] for r in rows})
    lo = min(r["utility_mean"] for r in rows)
    hi = max(r["utility_mean"] for r in rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for g, group in enumerate(groups):
        members = [r for r in rows if r["group"] == group]
        xs = [r["over_refusal_rate_mean"] for r in members]
        ys = [r["refusal_rate_mean"] for r in members]
        xerr = error_bars([interval_bars(r, "over_refusal_rate") for r in members])
        yerr = error_bars([interval_bars(r, "refusal_rate") for r in members])
        if xerr is not None and yerr is not None:  # one seed has no interval to show
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor="0.6", lw=0.8,
                        zorder=1)
        sc = ax.scatter(xs, ys, c=[r["utility_mean"] for r in members], cmap="viridis",
                        vmin=lo, vmax=hi if hi > lo else lo + 1e-9, s=70,
                        marker=_MARKERS[g % len(_MARKERS)], edgecolors="k", label=group,
                        zorder=2)
        for r in members:
            ax.annotate(f"{r['lr']:g}", (r["over_refusal_rate_mean"], r["refusal_rate_mean"]),
                        textcoords="offset points", xytext=(5, 4), fontsize=7)
    fig.colorbar(sc, ax=ax, label="utility (ROUGE-L recall)")
    ax.set_xlabel("over-refusal rate on safe prompts (lower is better)")
    ax.set_ylabel("refusal rate on harmful prompts (higher is better)")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title(seeds_note(rows), fontsize=9)
    legend_outside(ax, below=True, fontsize=7)  # the colour bar takes the right side
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m moopt.tasks.safety.plots COMPARE_DIR``: write ``COMPARE_DIR/tradeoff3.png``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m moopt.tasks.safety.plots COMPARE_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    results = out / "results.json"
    if not results.is_file():
        print(f"{results} not found: run `moopt compare safety --out {out}` first",
              file=sys.stderr)
        return 2
    rows = json.loads(results.read_text())["aggregates"]
    print(plot_refusal_tradeoff(rows, out / "tradeoff3.png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
