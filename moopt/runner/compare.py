"""``moopt compare``: a grid of runs (policies x storages x learning rates x seeds, and any
further config fields the preset or ``--vary`` names, such as a task's ``mode``) on one
prepared model, with tables of mean and spread over seeds and trade-off plots.

Layout of the output directory:
    compare.json        the grid and the base config (identifies the comparison)
    runs/<label>/       one ordinary run directory per grid point
    results.json        every run's metrics and the per-config aggregates
    report.md           tables, the task's own sections (``TaskAdapter.compare_extras``),
                        stage times, trade-off and learning-rate plots

With ``resume=True`` finished grid points are read back instead of re-run, so an
interrupted comparison continues where it stopped.

Example:
    >>> from moopt.runner.compare import CompareGrid
    >>> g = CompareGrid(configs=[("shared", "fp32"), ("bridged", "fp32")], lrs=[1e-3], seeds=[0, 1])
    >>> [p["label"] for p in g.points()][:2]
    ['shared-fp32-lr0.001-s0', 'shared-fp32-lr0.001-s1']
    >>> g.axes = {"mode": ["alternating", "joint"]}
    >>> [p["group"] for p in g.points()][:3:2]
    ['shared-fp32-alternating', 'shared-fp32-joint']
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moopt.runner.atomic import write_json_atomic, write_text_atomic
from moopt.runner.claims import build_claims
from moopt.runner.config import RunConfig, validate_config
from moopt.runner.loop import is_main_process
from moopt.runner.report import markdown_table
from moopt.runner.run import cpu_threads, make_context, run_task
from moopt.runner.rundir import open_run_dir
from moopt.runner.stats import mean_interval
from moopt.runner.task import ReportSection, TaskAdapter


def storage_label(storage: str | dict[str, str]) -> str:
    if isinstance(storage, dict):
        return "+".join(f"{k}={v}" for k, v in sorted(storage.items()))
    return storage


def axis_label(value: Any) -> str:
    """How a value of an extra grid axis appears in group names (``joint``, ``0.5``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


@dataclass
class CompareGrid:
    """The (policy, storage) configurations, learning rates and seeds to run.

    ``axes``: further config fields to vary, ``{field: [values]}`` (for example
    ``{"mode": ["alternating", "joint"]}``); every combination of their values is one more
    configuration, named in the group after the policy and storage. Their order is the
    preset's (or ``--vary``'s).
    """

    configs: list[tuple[str, str | dict[str, str]]]
    lrs: list[float]
    seeds: list[int]
    skipped: list[str] = field(default_factory=list)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    baseline: tuple[str, str | dict[str, str]] | None = None

    def baseline_config(self) -> tuple[str, str | dict[str, str]]:
        """The (policy, storage) every other configuration is compared with in the
        report's claims: ``baseline``, else the first configuration."""
        return self.baseline if self.baseline is not None else self.configs[0]

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any] | None,
        base: RunConfig,
        *,
        policies: list[str] | None = None,
        storages: list[str] | None = None,
        lrs: list[float] | None = None,
        seeds: list[int] | None = None,
        axes: dict[str, list[Any]] | None = None,
        baseline: tuple[str, str | dict[str, str] | None] | None = None,
    ) -> CompareGrid:
        """The grid of a preset's ``"compare"`` entry, overridden by explicit lists.

        Configurations of the preset whose policy or storage is not registered are skipped
        (and listed in ``skipped``); explicitly requested ones must exist. ``axes`` replaces
        the preset's ``"axes"`` entry key by key; every axis must name a field of ``base``'s
        config class other than the ones the grid sets itself. ``baseline`` (policy,
        storage or ``None`` for the policy's first storage) overrides the preset's
        ``"baseline"`` and must be a configuration of the grid; a preset's baseline that
        the grid does not hold (``--policies`` left it out) falls back to the first
        configuration.
        """
        from moopt.states.policy import list_policies
        from moopt.states.storage import list_storages

        spec = dict(spec or {})
        if policies or storages:
            pols = policies or [base.policy]
            stos = storages or [base.storage]
            configs = [(p, s) for p in pols for s in stos]
            optional = False
        elif "configs" in spec:
            configs = [(c[0], c[1]) for c in spec["configs"]]
            optional = True
        else:
            pols = spec.get("policies", [base.policy])
            stos = spec.get("storages", [base.storage])
            configs = [(p, s) for p in pols for s in stos]
            optional = True
        known_p, known_s = set(list_policies()), set(list_storages())
        kept, skipped = [], []
        for pol, sto in configs:
            names = list(sto.values()) if isinstance(sto, dict) else [sto]
            bad = [pol] if pol not in known_p else []
            bad += [s for s in names if s not in known_s]
            if not bad:
                kept.append((pol, sto))
            elif optional:
                skipped.append(f"{pol}/{storage_label(sto)} (not registered: {', '.join(bad)})")
            else:
                raise ValueError(
                    f"compare: {', '.join(repr(b) for b in bad)} not registered; policies: "
                    f"{', '.join(sorted(known_p))}; storages: {', '.join(sorted(known_s))}"
                )
        grid = cls(
            configs=kept,
            lrs=[float(x) for x in (lrs or spec.get("lrs") or [base.lr])],
            seeds=[int(x) for x in (seeds or spec.get("seeds") or [base.seed])],
            skipped=skipped,
            axes=check_axes({**dict(spec.get("axes") or {}), **dict(axes or {})}, type(base)),
        )
        if not grid.configs:
            raise ValueError(f"compare: no runnable configuration left (skipped: {skipped})")
        if baseline is not None:
            grid.baseline = _find_config(grid.configs, baseline, "--baseline")
        elif spec.get("baseline"):
            try:
                grid.baseline = _find_config(grid.configs, tuple(spec["baseline"]), "baseline")
            except ValueError:
                grid.baseline = None
        return grid

    def points(self) -> list[dict[str, Any]]:
        """One dict per run: policy, storage, lr, seed, ``axes`` (the extra fields' values),
        group and label."""
        out = []
        names = list(self.axes)
        for pol, sto in self.configs:
            for values in itertools.product(*(self.axes[n] for n in names)):
                extra = dict(zip(names, values))
                group = "-".join([pol, storage_label(sto), *map(axis_label, values)])
                for lr in self.lrs:
                    for seed in self.seeds:
                        label = re.sub(r"[^A-Za-z0-9_.+=-]", "_", f"{group}-lr{lr:g}-s{seed}")
                        out.append({"policy": pol, "storage": sto, "lr": lr, "seed": seed,
                                    "axes": extra, "group": group, "label": label})
        return out

    def as_dict(self) -> dict[str, Any]:
        data = {"configs": [list(c) for c in self.configs], "lrs": self.lrs, "seeds": self.seeds}
        if self.axes:
            data["axes"] = self.axes
        return data


def _find_config(
    configs: list[tuple[str, str | dict[str, str]]],
    wanted: tuple[str, str | dict[str, str] | None],
    what: str,
) -> tuple[str, str | dict[str, str]]:
    """The configuration of ``configs`` matching ``wanted`` (a storage of ``None`` matches
    the policy's first), or a ValueError naming the grid's configurations."""
    pol, sto = wanted[0], (wanted[1] if len(wanted) > 1 else None)
    for c in configs:
        if c[0] == pol and (sto is None or storage_label(c[1]) == storage_label(sto)):
            return c
    known = ", ".join(f"{p}/{storage_label(s)}" for p, s in configs)
    name = pol if sto is None else f"{pol}/{storage_label(sto)}"
    raise ValueError(f"compare: {what} {name} is not a configuration of the grid; "
                     f"configurations: {known}")


# Config fields every grid sets itself, with the command-line flag that lists their values.
GRID_FIELDS = {"policy": "--policies", "storage": "--storages", "lr": "--lrs", "seed": "--seeds"}


def check_axes(axes: dict[str, list[Any]], config_class: type[RunConfig]) -> dict[str, list[Any]]:
    """``axes`` with list values, after checking each names a config field the grid does
    not set itself and has at least one value."""
    out = {}
    for name, values in axes.items():
        if name in GRID_FIELDS:
            raise ValueError(f"compare: axis {name!r} is set by the grid itself; use "
                             f"{GRID_FIELDS[name]} instead")
        if name not in config_class.model_fields:
            raise ValueError(f"compare: axis {name!r} is not a config field of "
                             f"{config_class.__name__}; fields: "
                             + ", ".join(sorted(config_class.model_fields)))
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise ValueError(f"compare: axis {name!r} has no values")
        out[name] = values
    return out


# Suffixes of the per-metric keys of an aggregate row (``<metric>_mean`` ...).
STAT_SUFFIXES = ("_mean", "_std", "_low", "_high")


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (group, lr), for every metric the runs share: ``<metric>_mean`` (mean over
    seeds), ``<metric>_low`` / ``<metric>_high`` (95 % percentile-bootstrap interval of the
    mean, :func:`moopt.runner.stats.mean_interval`; ``None`` for one seed) and
    ``<metric>_std`` (sample standard deviation; 0.0 for one seed)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["group"], r["lr"]), []).append(r)
    out = []
    for (group, lr), members in groups.items():
        row: dict[str, Any] = {"group": group, "lr": lr, "n": len(members),
                               "policy": members[0]["policy"],
                               "storage": members[0]["storage"],
                               **members[0].get("axes", {}),
                               "label": f"{group} lr={lr:g}"}
        names = sorted(set.intersection(*(set(m["metrics"]) for m in members)))
        for name in names:
            values = [m["metrics"][name] for m in members]
            iv = mean_interval(values)
            row[name + "_mean"] = iv.estimate
            row[name + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            row[name + "_low"], row[name + "_high"] = iv.low, iv.high
        out.append(row)
    return out


def claim_metrics(task: TaskAdapter, metrics: Sequence[str]) -> list[str]:
    """The metrics the report's claims tables show: the task's ``claim_metrics``, else
    its ``tradeoff`` pair, else the first two of ``metrics`` (those the runs have)."""
    wanted = task.claim_metrics or list(task.tradeoff or ()) or list(metrics[:2])
    return [m for m in wanted if m in metrics]


def run_compare(
    task: TaskAdapter,
    base: RunConfig,
    grid: CompareGrid,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    plots: bool = True,
    run_plots: bool | None = None,
) -> dict[str, Any]:
    """Run every grid point (sharing one ``prepare``), then write the comparison report.
    ``plots``: the comparison's plots; ``run_plots``: each run's own (default: ``plots``)."""
    run_plots = plots if run_plots is None else run_plots
    if base.task is None and task.name:
        base = base.model_copy(update={"task": task.name})
    task.check(base)
    marker = {"base": base.semantic_dict(), "grid": grid.as_dict()}
    main = is_main_process()  # under torch.distributed only rank 0 writes
    if not main:
        return _run_grid(task, base, grid, out, resume, plots, run_plots, main)
    # The comparison's directory stays locked until the grid is done.
    with open_run_dir(out, marker, resume=resume, overwrite=overwrite, marker="compare.json"):
        return _run_grid(task, base, grid, out, resume, plots, run_plots, main)


def _run_grid(task: TaskAdapter, base: RunConfig, grid: CompareGrid, out: Path, resume: bool,
              plots: bool, run_plots: bool, main: bool) -> dict[str, Any]:
    ctx = make_context(base, out)
    wall = time.perf_counter()
    # prepare runs under the config's thread count too (run_task sets it for each run).
    with ctx.stage("prepare"), cpu_threads(base.threads):
        prepared = task.prepare(base, ctx)
    from moopt.runner.progress import eta_text

    runs = []
    points = grid.points()
    ran, start = 0, time.perf_counter()  # points run now (reused ones take no time)
    for i, point in enumerate(points, 1):
        data = base.model_dump()
        data.update({k: point[k] for k in GRID_FIELDS})
        data.update(point["axes"])
        data["out"] = out / "runs" / point["label"]
        cfg = validate_config(type(base), data)
        run_dir = Path(cfg.out)
        metrics = _finished_metrics(run_dir, cfg) if resume else None
        if metrics is None:
            # One line per grid point, with the time left: a grid runs for many minutes.
            ctx.log(f"[{i}/{len(points)}] {point['label']} "
                    f"({eta_text(ran, len(points) - i + 1 + ran, time.perf_counter() - start)})")
            sub_ctx = make_context(cfg, run_dir)
            result = run_task(task, cfg, resume=resume, prepared=prepared, plots=run_plots,
                              ctx=sub_ctx)
            metrics = result.metrics
            ran += 1
            for stage, sec in sub_ctx.timings.items():
                ctx.timings["runs/" + stage] = ctx.timings.get("runs/" + stage, 0.0) + sec
        else:
            ctx.log(f"[{i}/{len(points)}] {point['label']} (finished earlier, reused)")
        eval_metrics = {k: v for k, v in metrics.items() if not k.startswith("time_")}
        runs.append({**point, "metrics": eval_metrics})
    rows = aggregate(runs)
    claims = build_claims(runs, baseline=grid.baseline_config(),
                          higher_is_better=dict(task.higher_is_better),
                          tradeoff=task.tradeoff)
    extras = []
    if main:
        with ctx.stage("task summary"):
            extras = task.compare_extras(rows, base, out, plots=plots)
    ctx.timings["total"] = time.perf_counter() - wall
    results = {"runs": runs, "aggregates": rows, "claims": claims, "timings": ctx.timings,
               "skipped": grid.skipped}
    if main:
        write_json_atomic(out / "results.json", results)
        write_compare_report(out, task, base, grid, rows, ctx.timings, plots=plots,
                             extras=extras, claims=claims)
    return results


def _finished_metrics(run_dir: Path, cfg: RunConfig) -> dict[str, float] | None:
    """Metrics of a finished earlier run with the same config, else ``None``."""
    try:
        status = json.loads((run_dir / "run.json").read_text())
        old = json.loads((run_dir / "config.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    from moopt.runner.rundir import config_differences

    if status.get("status") != "finished" or config_differences(old, cfg.semantic_dict()):
        return None
    return metrics


def write_compare_report(
    out: Path,
    task: TaskAdapter,
    base: RunConfig,
    grid: CompareGrid,
    rows: list[dict[str, Any]],
    timings: dict[str, float],
    *,
    plots: bool = True,
    extras: Sequence[ReportSection] = (),
    claims: dict[str, Any] | None = None,
) -> Path:
    """``report.md`` of a comparison: grid, claims against the baseline, task sections,
    tables of every metric, times and plots."""
    from moopt.runner import plots as P
    from moopt.runner.claims_report import claims_markdown, interval_cell
    from moopt.runner.report import _try_plot

    all_metrics = sorted({k[:-5] for r in rows for k in r if k.endswith("_mean")})
    shown = [m for m in (task.report_metrics or all_metrics) if m in all_metrics]
    parts = [f"# moopt compare: {base.task or task.name}"
             + (f" (preset `{base.preset}`)" if base.preset else ""), ""]
    varied = "".join(f" x {len(v)} {k} {v}" for k, v in grid.axes.items())
    parts += [f"Grid: {len(grid.configs)} policy/storage configs{varied} x {len(grid.lrs)} "
              f"lrs {grid.lrs} x {len(grid.seeds)} seeds {grid.seeds}. Values are means over "
              "seeds with a 95 % percentile-bootstrap interval in brackets (9,999 resamples "
              "of the seeds; the value and n=1 for one seed).", ""]
    if grid.skipped:
        parts += ["Skipped (not available in this installation): " + "; ".join(grid.skipped), ""]
    if claims is not None and claims.get("baseline"):
        parts += [f"## Claims against the baseline `{claims['baseline']}`", "",
                  claims_markdown(claims, rows, claim_metrics(task, all_metrics),
                                  dict(task.higher_is_better))]
    header = ["config", "lr", "seeds"] + shown
    body = [[r["group"], r["lr"], r["n"]]
            + [interval_cell({"estimate": r[m + "_mean"], "low": r.get(m + "_low"),
                              "high": r.get(m + "_high"), "n": r["n"]})
               if m + "_mean" in r else "-" for m in shown]
            for r in sorted(rows, key=lambda r: (r["group"], r["lr"]))]
    for section in extras:
        parts += [f"## {section.title}", "", section.markdown, ""]
        parts += [f"![{Path(img).stem}]({img})" for img in section.images]
        parts += [""] if section.images else []
    parts += ["## Results" if not extras else "## All metrics", "",
              markdown_table(header, body), ""]
    parts += ["## Stage times", "",
              markdown_table(["stage", "seconds"], [[k, v] for k, v in timings.items()]), ""]
    if plots and task.tradeoff and all(m in all_metrics for m in task.tradeoff):
        x, y = task.tradeoff
        images = []
        png, note = _try_plot(P.plot_tradeoff, rows, x, y, out / "tradeoff.png")
        images.append((png, note))
        if len(grid.lrs) > 1:
            png, note = _try_plot(P.plot_lr_spread, rows, [x, y], out / "lr_spread.png")
            images.append((png, note))
        parts += ["## Plots", ""]
        for png, note in images:
            parts.append(f"![{png.stem}]({png.name})" if png else f"_Plot skipped: {note}_")
        parts.append("")
    parts += ["## Base config", "", "```json",
              json.dumps(base.model_dump(mode="json"), indent=2, sort_keys=True), "```", ""]
    path = out / "report.md"
    write_text_atomic(path, "\n".join(parts))
    return path
