"""One run of a task, start to finish: directory checks, prepare, build, train, evaluate,
report. This is what ``moopt run`` calls.

Files of a run directory:
    config.json    the resolved config (written first; identifies the run)
    history.jsonl  training losses and periodic evaluations
    checkpoint.pt  the latest resumable checkpoint
    metrics.json   final metrics, flat floats (written last, atomically)
    report.md      config, stage times, final metrics, plots (*.png)
    run.json       status ("running" / "finished"), stage times

Example:
    >>> import tempfile, pathlib, torch
    >>> from moopt.runner import RunConfig, TaskAdapter, TrainObjective, TrainingSetup
    >>> from moopt.runner.run import run_task
    >>> class Pull(TaskAdapter):
    ...     name = "pull"
    ...     def build(self, cfg, ctx):
    ...         w = torch.nn.Linear(1, 1, bias=False)
    ...         loss = lambda: (w.weight - 1).pow(2).sum()
    ...         return TrainingSetup(w, {"one": TrainObjective(loss)})
    ...     def evaluate(self, setup, cfg, ctx):
    ...         return {"w": setup.model.weight.item()}
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> res = run_task(Pull(), RunConfig(steps=200, lr=0.05, out=out, progress=False),
    ...                plots=False)
    >>> round(res.metrics["w"], 2), (out / "metrics.json").is_file()
    (1.0, True)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moopt.errors import MooptError
from moopt.runner.atomic import write_json_atomic
from moopt.runner.checkpoint import seed_everything
from moopt.runner.config import RunConfig
from moopt.runner.devices import resolve_hardware
from moopt.runner.loop import TrainResult, is_main_process, train
from moopt.runner.rundir import open_run_dir
from moopt.runner.task import ReportSection, RunContext, TaskAdapter

_UNSET: Any = object()


class RunError(MooptError, RuntimeError):
    """The run could not start (another rank's failure, reported on this one)."""


@dataclass
class RunResult:
    """Final metrics, where they were written, stage times, and the trained setup."""

    metrics: dict[str, float]
    run_dir: Path | None
    timings: dict[str, float]
    train: TrainResult
    setup: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


def default_cache_dir() -> Path:
    """``$MOOPT_CACHE_DIR``, else ``~/.cache/moopt``."""
    env = os.environ.get("MOOPT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "moopt"


def make_context(cfg: RunConfig, run_dir: Path | None) -> RunContext:
    main = is_main_process()
    return RunContext(
        run_dir=run_dir if main else None,
        cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(),
        is_main=main,
    )


def run_task(
    task: TaskAdapter,
    cfg: RunConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    prepared: Any = _UNSET,
    stop_after: int | None = None,
    plots: bool = True,
    ctx: RunContext | None = None,
) -> RunResult:
    """Run ``task`` with ``cfg``; write into ``cfg.out`` unless it is ``None``.

    ``prepared``: the result of an earlier ``task.prepare`` (``moopt compare`` shares one
    across the grid); by default ``prepare`` is called here. ``stop_after``: stop after
    that many steps, as an interruption would (the run can then be resumed).
    """
    if cfg.task is None and task.name:
        cfg = cfg.model_copy(update={"task": task.name})
    # Device, precision and process group first: asking for CUDA where there is none is
    # an error before anything is created.
    hardware = resolve_hardware(cfg)
    task.validate(cfg)
    run_dir = Path(cfg.out) if cfg.out is not None else None
    main = is_main_process()
    mode = _open_on_main(run_dir, cfg, resume, overwrite, main)
    if run_dir is not None and main:
        write_json_atomic(run_dir / "run.json", {"status": "running", "mode": mode,
                                                 "hardware": hardware.describe()})
    ctx = ctx or make_context(cfg, run_dir)
    ctx.hardware = hardware
    try:
        with cpu_threads(cfg.threads):
            return _run(task, cfg, ctx, run_dir, main, mode, prepared, stop_after, plots)
    except BaseException as err:
        if run_dir is not None and main:
            write_json_atomic(run_dir / "run.json", {
                "status": "failed", "mode": mode, "error": f"{type(err).__name__}: {err}",
                "hardware": hardware.describe()})
        raise


def _open_on_main(run_dir: Path | None, cfg: RunConfig, resume: bool, overwrite: bool,
                  main: bool) -> str:
    """Rank 0 opens the run directory and every rank learns whether the run resumes (or
    that rank 0 refused the directory, with its message)."""
    from moopt import distributed as mdist

    mode, error = "fresh", None
    if run_dir is not None and main:
        try:
            mode = open_run_dir(run_dir, cfg, resume=resume, overwrite=overwrite)
        except Exception as err:
            error = err
    outcome = mdist.broadcast_from_main(
        (mode, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if outcome[1] is not None:
        raise RunError(f"rank 0 could not open the run directory: {outcome[1]}")
    return outcome[0]


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (nothing when ``n`` is None), then
    restore the process's setting. One thread per run is the robust choice on a small shared
    machine: with more threads than free cores, every parallel region waits for the slowest
    thread (measured 15x slower on 2 busy cores)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run(task: TaskAdapter, cfg: RunConfig, ctx: RunContext, run_dir: Path | None, main: bool,
         mode: str, prepared: Any, stop_after: int | None, plots: bool) -> RunResult:
    if prepared is _UNSET:
        from moopt import distributed as mdist

        # Rank 0 fills the cache first; the others then read it instead of racing to write.
        if not main:
            mdist.barrier()
        with ctx.stage("prepare"):
            ctx.prepared = task.prepare(cfg, ctx)
        if main:
            mdist.barrier()
    else:
        ctx.prepared = prepared
    seed_everything(cfg.seed)
    with ctx.stage("build"):
        setup = task.build(cfg, ctx)
    start = time.perf_counter()
    result = train(
        setup,
        cfg,
        evaluate=lambda: task.evaluate(setup, cfg, ctx),
        run_dir=run_dir,
        resume=mode == "resume",
        stop_after=stop_after,
        log=ctx.log,
        hardware=ctx.hardware,
    )
    elapsed = time.perf_counter() - start
    ctx.timings["train"] = ctx.timings.get("train", 0.0) + elapsed - result.eval_seconds
    ctx.timings["evaluate"] = ctx.timings.get("evaluate", 0.0) + result.eval_seconds
    out = RunResult(result.metrics, run_dir if main else None, dict(ctx.timings), result, setup)
    if run_dir is None or not main:
        return out
    hardware = result.extras.get("hardware", {})
    status = {"status": "finished" if result.finished else "stopped", "step": result.step,
              "mode": mode, "timings": ctx.timings, "hardware": hardware}
    if result.finished:
        from moopt.runner.report import write_run_report

        flat = dict(result.metrics)
        flat.update({f"time_{k}_s": v for k, v in ctx.timings.items()})
        extras = [hardware_section(hardware), *task.report_extras(setup, cfg, ctx)]
        write_run_report(run_dir, cfg, flat, result.history, ctx.timings, extras, plots=plots)
        write_json_atomic(run_dir / "metrics.json", flat)
    write_json_atomic(run_dir / "run.json", status)
    return out


def hardware_section(hardware: dict[str, Any]) -> ReportSection:
    """The report's record of where the run computed (device, precision, ranks)."""
    rows = "\n".join(f"- {key}: `{value}`" for key, value in hardware.items())
    return ReportSection("Hardware", rows)
