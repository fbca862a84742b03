"""Markdown reports of one run (``report.md``) with PNG plots.

Plots need matplotlib; without it the report is still written and says why the plots are
missing (a long run never fails at its very end for want of a plotting library).

Example:
    >>> from moopt.runner.report import markdown_table
    >>> print(markdown_table(["a", "b"], [[1, 2.5]]))
    | a | b |
    | --- | --- |
    | 1 | 2.5 |
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moopt.runner.atomic import write_text_atomic
from moopt.runner.config import RunConfig
from moopt.runner.history import History
from moopt.runner.task import ReportSection


def fmt(value: Any) -> str:
    """Numbers with 4 significant digits, everything else as text."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _try_plot(fn, *args, **kwargs) -> tuple[Path | None, str | None]:
    try:
        return fn(*args, **kwargs), None
    except ImportError as err:
        warnings.warn(str(err), stacklevel=3)
        return None, str(err)


def write_run_report(
    run_dir: Path,
    cfg: RunConfig,
    metrics: dict[str, float],
    history: History,
    timings: dict[str, float],
    extras: Sequence[ReportSection] = (),
    *,
    plots: bool = True,
) -> Path:
    """Write ``report.md`` (and its plots) into ``run_dir``; returns the report's path."""
    from moopt.runner import plots as P

    title = f"# moopt run: {cfg.task or 'task'}"
    if cfg.preset:
        title += f" (preset `{cfg.preset}`)"
    parts = [title, ""]
    parts += ["## Final metrics", "",
              markdown_table(["metric", "value"], sorted(metrics.items())), ""]
    parts += ["## Stage times", "",
              markdown_table(["stage", "seconds"], [[k, v] for k, v in timings.items()]), ""]
    if plots:
        images, notes = [], []
        losses = history.losses()
        if losses:
            png, note = _try_plot(P.plot_losses, losses, run_dir / "losses.png")
            images.append(png)
            notes.append(note)
        evals = history.evals()
        if len(evals) > 1:
            names = sorted({k for _, m in evals for k in m})  # constants get no panel
            png, note = _try_plot(P.plot_evals, evals, run_dir / "evals.png", names)
            images.append(png)
            notes.append(note)
        shown = [p for p in images if p is not None]
        missing = sorted({n for n in notes if n})
        if shown or missing:
            parts += ["## Plots", ""]
            parts += [f"![{p.stem}]({p.name})" for p in shown]
            parts += [f"_Plots skipped: {n}_" for n in missing]
            parts.append("")
    for section in extras:
        parts += [f"## {section.title}", "", section.markdown, ""]
        parts += [f"![{Path(img).stem}]({img})" for img in section.images]
        parts.append("")
    parts += ["## Config", "", "```json",
              json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True), "```", ""]
    path = run_dir / "report.md"
    write_text_atomic(path, "\n".join(parts))
    return path
