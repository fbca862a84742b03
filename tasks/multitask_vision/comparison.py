"""Side-by-side comparison over sharing policies x storages x modes, mean and spread over
seeds, with delta_m, mean rank and optimizer memory per configuration.

The runner's ``moopt compare`` grid spans policies, storages, learning rates and seeds; the
mode (alternating / joint) is one config field, so this module runs one ``moopt compare``
grid per mode (``OUT/mode-<mode>/``, each with its own report) and merges them into
``OUT/report.md``, ``OUT/results.json`` and ``OUT/delta_m.png``. Single-task baselines are
trained once per seed and shared by every configuration (see :mod:`.baselines`).

    python -m tasks.multitask_vision.sweep --preset demo --out runs/mtv-demo
    python -m tasks.multitask_vision.sweep --preset smoke --modes joint --policies shared,bridged

Example:
    >>> from tasks.multitask_vision.sweep import rank_table
    >>> rows = [{"config": "a", "acc_x_mean": 0.9}, {"config": "b", "acc_x_mean": 0.8}]
    >>> rank_table(rows, ["x"])
    {'a': 1.0, 'b': 2.0}
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moopt.runner.atomic import write_json_atomic
from moopt.runner.compare import CompareGrid, run_compare, storage_label
from moopt.runner.config import resolve_config
from moopt.runner.report import markdown_table
from moopt.states.storage import list_storages
from tasks.multitask_vision.adapter import MultitaskVisionTask
from tasks.multitask_vision.config import MultitaskVisionConfig
from tasks.multitask_vision.metrics import mean_rank

MODES = ("alternating", "joint")


def rank_table(rows: Sequence[dict[str, Any]], tasks: Sequence[str]) -> dict[str, float]:
    """Mean rank (1 = best) of each row's config over the tasks' mean accuracies."""
    results = {r["config"]: {t: r[f"acc_{t}_mean"] for t in tasks} for r in rows}
    return mean_rank(results, higher_is_better=True)


def run_sweep(
    preset: str,
    out: Path,
    *,
    modes: Sequence[str] | None = None,
    policies: list[str] | None = None,
    storages: list[str] | None = None,
    seeds: list[int] | None = None,
    flags: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Run the grid of ``preset`` for every mode; write the merged report into ``out``."""
    task = MultitaskVisionTask()
    if preset not in task.presets:
        raise ValueError(f"unknown preset {preset!r}; presets: {sorted(task.presets)}")
    spec = dict(task.presets[preset].get("compare", {}))
    modes = list(modes or spec.get("modes") or ["alternating"])
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {list(MODES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    wall = time.perf_counter()
    base = None
    for mode in modes:
        base = resolve_config(
            MultitaskVisionConfig, preset={**task.presets[preset], "preset": preset},
            flags={**(flags or {}), "mode": mode, "task": task.name, "progress": False},
            overrides=overrides)
        if policies or storages:
            # An explicit list replaces only its own axis; the others come from the preset
            # (its backends that are not registered here are left out, as compare does).
            known = set(list_storages())
            grid = CompareGrid.from_spec(
                spec, base, policies=policies or spec.get("policies"),
                storages=storages or [s for s in spec.get("storages", []) if s in known],
                seeds=seeds)
        else:
            grid = CompareGrid.from_spec(spec, base, seeds=seeds)
        result = run_compare(task, base, grid, out / f"mode-{mode}", resume=resume,
                             overwrite=overwrite, plots=plots)
        for row in result["aggregates"]:
            rows.append({**row, "mode": mode, "config": f"{row['group']}-{mode}"})
        runs += [{**r, "mode": mode} for r in result["runs"]]
    assert base is not None
    tasks = [k[4:-5] for k in rows[0] if k.startswith("acc_") and k.endswith("_mean")
             and k not in ("acc_mean_mean",)]
    ranks = rank_table(rows, tasks) if len(rows) > 1 else {rows[0]["config"]: 1.0}
    for row in rows:
        row["mean_rank"] = ranks[row["config"]]
    memory = _memory(base, rows)
    results = {"preset": preset, "modes": modes, "tasks": tasks, "rows": rows, "runs": runs,
               "memory": memory, "seconds": time.perf_counter() - wall}
    write_json_atomic(out / "results.json", results)
    write_report(out, base, rows, tasks, memory, results["seconds"], plots=plots)
    return results


def _memory(base: MultitaskVisionConfig, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Bytes of optimizer state per (policy, storage) for this dataset's model."""
    import torch

    from tasks.multitask_vision.data import load_data
    from tasks.multitask_vision.memory import optimizer_memory
    from tasks.multitask_vision.setup import make_model

    data = load_data(base)
    model = make_model(base.model_copy(update={"model": None}), data)
    example = torch.zeros(1, data.channels, data.image_size, data.image_size)
    out = {}
    for row in rows:
        key = row["group"]
        if key not in out:
            rep = optimizer_memory(model, data.task_names, row["policy"], row["storage"],
                                   example)
            out[key] = rep["total_bytes"]
    return out


def _cell(row: dict[str, Any], metric: str, scale: float = 1.0, digits: int = 4) -> str:
    if metric + "_mean" not in row:
        return "-"
    mean, std = row[metric + "_mean"] * scale, row[metric + "_std"] * scale
    return f"{mean:.{digits}g} ± {std:.2g}"


def write_report(
    out: Path,
    base: MultitaskVisionConfig,
    rows: list[dict[str, Any]],
    tasks: list[str],
    memory: dict[str, float],
    seconds: float,
    *,
    plots: bool = True,
) -> Path:
    """``OUT/report.md``: the side-by-side table (and ``delta_m.png``)."""
    rows = sorted(rows, key=lambda r: (r.get("delta_m_mean", 0.0), r["config"]))
    n_seeds = max(r["n"] for r in rows)
    header = ["policy", "storage", "mode", "seeds"] + [f"acc {t} (%)" for t in tasks]
    header += ["delta_m % (lower better)", "mean rank", "state KiB", "s / epoch"]
    body = []
    for r in rows:
        body.append([r["policy"], storage_label(r["storage"]), r["mode"], r["n"]]
                    + [_cell(r, f"acc_{t}", 100.0) for t in tasks]
                    + [_cell(r, "delta_m"), f"{r['mean_rank']:.2f}",
                       f"{memory[r['group']] / 1024:.1f}", _cell(r, "seconds_per_epoch", 1, 3)])
    single = [f"{rows[0][f'single_acc_{t}_mean'] * 100:.4g} ± "
              f"{rows[0][f'single_acc_{t}_std'] * 100:.2g}"
              for t in tasks if f"single_acc_{t}_mean" in rows[0]]
    parts = [f"# multitask-vision: policies x storages x modes ({base.dataset}, preset "
             f"`{base.preset}`)", "",
             f"Test accuracy per task, delta_m% against single-task models (ALGORITHMS.md "
             f"section 6; negative = the multi-task model beats them), mean rank over tasks "
             f"(1 = best), optimizer state from `memory_report()`, training seconds per "
             f"epoch. Mean ± sample std over up to {n_seeds} seeds; {base.steps} steps of "
             f"batch {base.batch_size}, lr {base.lr:g}. Wall time {seconds:.0f} s.", "",
             markdown_table(header, body), ""]
    if single:
        parts += ["Single-task baselines (AdamW, fp32, same steps, batch, lr and seeds): "
                  + ", ".join(f"{t} {s} %" for t, s in zip(tasks, single)), ""]
    if plots:
        png = out / "delta_m.png"
        try:
            plot_delta_m(rows, png)
            parts += [f"![delta_m]({png.name})", ""]
        except ImportError as err:
            parts += [f"_Plot skipped: {err}_", ""]
    parts += ["Per-mode reports: " + ", ".join(
        f"[{m}](mode-{m}/report.md)" for m in sorted({r['mode'] for r in rows})), ""]
    path = out / "report.md"
    tmp = path.with_name("report.md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path


def plot_delta_m(rows: list[dict[str, Any]], path: Path) -> Path:
    """Horizontal bars of delta_m (mean ± std over seeds) per configuration."""
    from moopt.runner.plots import require_matplotlib

    plt = require_matplotlib()
    rows = [r for r in rows if "delta_m_mean" in r]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    ys = list(range(len(rows)))
    ax.barh(ys, [r["delta_m_mean"] for r in rows], xerr=[r["delta_m_std"] for r in rows],
            color=["tab:blue" if r["mode"] == "alternating" else "tab:orange" for r in rows])
    ax.set_yticks(ys, [r["config"] for r in rows])
    ax.axvline(0.0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("delta_m % vs single-task (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    def csv(text: str) -> list[str]:
        return [x.strip() for x in text.split(",") if x.strip()]

    p = argparse.ArgumentParser(prog="python -m tasks.multitask_vision.sweep",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--modes", type=csv)
    p.add_argument("--policies", type=csv)
    p.add_argument("--storages", type=csv)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in csv(s)])
    p.add_argument("--dataset")
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--steps", type=int)
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    flags = {"dataset": args.dataset, "data_dir": args.data_dir, "steps": args.steps,
             "cache_dir": args.cache_dir}
    results = run_sweep(args.preset, args.out, modes=args.modes, policies=args.policies,
                        storages=args.storages, seeds=args.seeds,
                        flags={k: v for k, v in flags.items() if v is not None},
                        overrides=args.overrides, resume=args.resume,
                        overwrite=args.overwrite, plots=not args.no_plots)
    print((args.out / "report.md").read_text())
    print(json.dumps({"seconds": round(results["seconds"], 1)}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
