"""The side-by-side table of ``moopt compare multitask-vision``: policies x storages x
modes (and any other varied field), mean and spread over seeds, with delta_m, mean rank,
optimizer memory and seconds per epoch, plus ``delta_m.png``.

The runner's compare machinery runs the grid (the presets vary ``mode`` as an extra axis,
see :mod:`.presets`) and calls :meth:`MultitaskVisionTask.compare_extras`, which calls
:func:`summary_sections` here. Single-task baselines are trained once per seed and shared
by every configuration (see :mod:`.baselines`).

    moopt compare multitask-vision --preset demo --out runs/mtv-demo
    moopt compare multitask-vision --preset smoke --vary mode=alternating,joint --out DIR

Example:
    >>> from moopt.tasks.multitask_vision.comparison import rank_table
    >>> rows = [{"config": "a", "acc_x_mean": 0.9}, {"config": "b", "acc_x_mean": 0.8}]
    >>> rank_table(rows, ["x"])
    {'a': 1.0, 'b': 2.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moopt.tasks.multitask_vision.config import MultitaskVisionConfig
from moopt.tasks.multitask_vision.metrics import mean_rank

from moopt.runner.compare import STAT_SUFFIXES, storage_label
from moopt.runner.report import markdown_table
from moopt.runner.task import ReportSection

# Row keys of the grid that are not varied config fields.
ROW_KEYS = {"group", "lr", "n", "policy", "storage", "label", "config", "mean_rank",
            "state_bytes"}


def rank_table(rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> dict[str, float]:
    """Mean rank (1 = best) of each row's config over the tasks' mean accuracies."""
    results = {r["config"]: {t: r[f"acc_{t}_mean"] for t in tasks} for r in rows}
    return mean_rank(results, higher_is_better=True)


def task_names(rows: Sequence[dict[str, Any]], order: Sequence[str] = ()) -> list[str]:
    """The tasks whose accuracy the rows hold (``acc_<task>_mean``, not ``acc_mean``), in
    the dataset's ``order`` where given."""
    found = [k[4:-5] for k in rows[0] if k.startswith("acc_") and k.endswith("_mean")
             and k != "acc_mean_mean"]
    return [t for t in order if t in found] + [t for t in found if t not in order]


def varied_fields(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The extra grid axes (``mode``...), read off the rows."""
    return [k for k in rows[0] if k not in ROW_KEYS and not k.endswith(STAT_SUFFIXES)]


def summary_sections(
    rows: list[dict[str, Any]], base: MultitaskVisionConfig, out: Path, *, plots: bool = True
) -> list[ReportSection]:
    """Rank the rows (adds ``config``, ``mean_rank`` and ``state_bytes`` to each) and build
    the report's side-by-side section; ``delta_m.png`` into ``out`` when ``plots``."""
    if not rows:
        return []
    axes = varied_fields(rows)
    several_lrs = len({r["lr"] for r in rows}) > 1
    for r in rows:
        r["config"] = r["group"] + (f"-lr{r['lr']:g}" if several_lrs else "")
    from moopt.tasks.multitask_vision.data import load_data

    tasks = task_names(rows, load_data(base).task_names)
    ranks = rank_table(rows, tasks) if len(rows) > 1 else {rows[0]["config"]: 1.0}
    for r in rows:
        r["mean_rank"] = ranks[r["config"]]
    memory = state_bytes(base, rows)
    for r in rows:
        r["state_bytes"] = memory[f"{r['policy']}-{storage_label(r['storage'])}"]
    table = side_by_side(rows, tasks, axes, several_lrs)
    text = (f"Test accuracy per task, delta_m% against single-task models (mean over tasks "
            f"of (single - multi) / single x 100; negative = the multi-task model beats "
            f"them), mean rank over tasks "
            f"(1 = best), optimizer state from `memory_report()`, training seconds per "
            f"epoch. Mean over up to {max(r['n'] for r in rows)} seeds with its 95 % "
            f"bootstrap interval in brackets; "
            f"{base.steps} steps of batch {base.batch_size} ({base.dataset}).\n\n{table}")
    single = baseline_line(rows[0], tasks)
    if single:
        text += "\n\n" + single
    images = []
    if plots:
        try:
            plot_delta_m(sorted(rows, key=_order), out / "delta_m.png")
            images.append("delta_m.png")
        except ImportError as err:
            text += f"\n\n_Plot skipped: {err}_"
    return [ReportSection("Side by side: " + " x ".join(["policies", "storages"] + axes),
                          text, images)]


def state_bytes(base: MultitaskVisionConfig, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Bytes of optimizer state per (policy, storage) for this dataset's model."""
    import torch
    from moopt.tasks.multitask_vision.data import load_data
    from moopt.tasks.multitask_vision.memory import optimizer_memory
    from moopt.tasks.multitask_vision.setup import make_model

    data = load_data(base)
    model = make_model(base.model_copy(update={"model": None}), data)
    example = torch.zeros(1, data.channels, data.image_size, data.image_size)
    out: dict[str, float] = {}
    for r in rows:
        key = f"{r['policy']}-{storage_label(r['storage'])}"
        if key not in out:
            rep = optimizer_memory(model, data.task_names, r["policy"], r["storage"], example,
                                   **base.optimizer_options)
            out[key] = rep["total_bytes"]
    return out


def _order(row: dict[str, Any]) -> tuple:
    return (row.get("delta_m_mean", 0.0), row["config"])


def _cell(row: dict[str, Any], metric: str, scale: float = 1.0, digits: int = 4) -> str:
    """``mean [low, high]`` (95 % bootstrap interval over seeds); ``mean (n=1)`` for one."""
    if metric + "_mean" not in row:
        return "-"
    mean = f"{row[metric + '_mean'] * scale:.{digits}g}"
    low, high = row.get(metric + "_low"), row.get(metric + "_high")
    if low is None or high is None:
        return f"{mean} (n={row['n']})"
    return f"{mean} [{low * scale:.{digits}g}, {high * scale:.{digits}g}]"


def side_by_side(
    rows: list[dict[str, Any]],
    tasks: list[str],
    axes: list[str],
    several_lrs: bool = False,
) -> str:
    """The markdown table, best delta_m first (rows ranked by :func:`summary_sections`)."""
    header = ["policy", "storage", *axes] + (["lr"] if several_lrs else []) + ["seeds"]
    header += [f"acc {t} (%)" for t in tasks]
    header += ["delta_m % (lower better)", "mean rank", "state KiB", "s / epoch"]
    body = []
    for r in sorted(rows, key=_order):
        body.append([r["policy"], storage_label(r["storage"]), *[r[a] for a in axes]]
                    + ([r["lr"]] if several_lrs else []) + [r["n"]]
                    + [_cell(r, f"acc_{t}", 100.0) for t in tasks]
                    + [_cell(r, "delta_m"), f"{r['mean_rank']:.2f}",
                       f"{r['state_bytes'] / 1024:.1f}", _cell(r, "seconds_per_epoch", 1, 3)])
    return markdown_table(header, body)


def baseline_line(row: dict[str, Any], tasks: list[str]) -> str:
    """The single-task baselines' accuracies (same in every row), or ``""``."""
    cells = [f"{t} {_cell(row, f'single_acc_{t}', 100.0)} %"
             for t in tasks if f"single_acc_{t}_mean" in row]
    if not cells:
        return ""
    return ("Single-task baselines (AdamW, fp32, same steps, batch, lr and seeds): "
            + ", ".join(cells))


def plot_delta_m(rows: list[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars of delta_m (mean over seeds, error bars its 95 % bootstrap interval)
    per configuration, coloured by the first varied field's value (the mode)."""
    from moopt.runner.plots import (
        error_bars,
        interval_bars,
        legend_outside,
        require_matplotlib,
        seeds_note,
    )

    plt = require_matplotlib()
    rows = [r for r in rows if "delta_m_mean" in r]
    axes = varied_fields(rows) if rows else []
    key = axes[0] if axes else "storage"
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    values = list(dict.fromkeys(str(r[key]) for r in rows))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    ys = list(range(len(rows)))
    ax.barh(ys, [r["delta_m_mean"] for r in rows],  # one seed: no error bars
            xerr=error_bars([interval_bars(r, "delta_m") for r in rows]),
            color=[palette[values.index(str(r[key])) % len(palette)] for r in rows])
    ax.set_yticks(ys, [r["config"] for r in rows])
    if len(values) > 1:
        from matplotlib.patches import Patch

        legend_outside(ax, handles=[Patch(color=palette[i % len(palette)], label=f"{key} {v}")
                                    for i, v in enumerate(values)])
    ax.axvline(0.0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("delta_m % vs single-task (lower is better)")
    ax.set_title(seeds_note(rows), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
