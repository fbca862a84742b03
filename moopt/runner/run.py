"""One run of a task, start to finish: checks, prepare, build, run directory, train,
evaluate, report. This is what ``moopt run`` calls.

Order: every name, path and option is checked first (the task's ``validate``, policy and
storage names, optimizer options, ``data_dir`` / ``model`` paths; after ``build`` the
objective names of ``schedule``, ``weights`` and ``lr_ratios``), so a typo never creates a
run directory. A directory that would be refused is refused before ``prepare``. The run
directory is then created and locked for the rest of the run (see
:mod:`moopt.runner.rundir`); under ``torch.distributed`` rank 0 decides whether the run
starts fresh or resumes and every rank follows that decision.

Files of a run directory:
    config.json      the resolved config (written first; identifies the run)
    run.json         status (running / finished / stopped / failed; a run whose process
                     died shows as interrupted), step, cumulative stage times, hardware
                     (device, precision, parallel mode, world size)
    history.jsonl    training losses and periodic evaluations
    checkpoint.json  manifest of the latest resumable checkpoint (in checkpoints/)
    metrics.json     final metrics, flat floats (written last, atomically)
    report.md        config, stage times, final metrics, plots (*.png)

Stage times add up over every part of a resumed run (a killed part counts up to its last
checkpoint).

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

import contextlib
import inspect
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moopt.runner.atomic import write_json_atomic
from moopt.runner.checkpoint import checkpoint_step, has_checkpoint, seed_everything
from moopt.runner.config import ConfigError, RunConfig
from moopt.runner.devices import resolve_hardware
from moopt.runner.loop import (
    TrainResult,
    is_main_process,
    make_optimizer,
    make_schedule,
    total_steps,
    train,
)
from moopt.runner.rundir import STATUS_NAME, OpenedRunDir, check_run_dir, open_run_dir, read_status
from moopt.runner.task import ReportSection, RunContext, TaskAdapter, TrainingSetup

_UNSET: Any = object()


class RunStopped(KeyboardInterrupt):
    """The run was asked to stop by a signal (SIGTERM); treated like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signal.Signals(signum).name}")
        self.signum = signum


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


# ------------------------------------------------------------------------------ checks
def check_config(cfg: RunConfig) -> None:
    """Checks that need no task objects: policy and storage names, optimizer options, and
    that ``data_dir`` and ``model`` exist. Raises with the bad value and the allowed ones."""
    from moopt.optimizer import MultiObjectiveOptimizer
    from moopt.states import get_policy
    from moopt.states.storage import resolve_storage

    policy = get_policy(cfg.policy)
    resolve_storage(cfg.storage, policy.roles())
    accepted = {name for name, p in inspect.signature(MultiObjectiveOptimizer).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    set_elsewhere = {"lr", "betas", "base_betas", "eps", "weight_decay", "lr_ratios"}
    unknown = sorted(set(cfg.optimizer_options) - (accepted - set_elsewhere))
    if unknown:
        raise ConfigError(
            f"config key 'optimizer_options' has unknown option(s) {unknown}; options: "
            f"{sorted(accepted - set_elsewhere)} (lr, betas, eps, weight_decay, lr_ratios are "
            "config keys of their own)")
    for key in ("data_dir", "model"):
        value = getattr(cfg, key)
        if value is not None and not Path(value).exists():
            raise ConfigError(f"config key {key!r}: {str(value)!r} does not exist")


def check_setup(setup: TrainingSetup, cfg: RunConfig) -> None:
    """Checks of the config against the built task: objective names in ``schedule``,
    ``weights`` and ``lr_ratios``, ``epochs`` without ``steps_per_epoch``, options the
    optimizer refuses."""
    make_optimizer(setup, cfg)
    schedule = make_schedule(cfg, list(setup.objectives))
    if schedule is None and cfg.max_grad_norm is not None:
        raise ConfigError("config key 'max_grad_norm' is not supported with schedule 'joint'")
    total_steps(cfg, setup)


def check_declared_objectives(task: TaskAdapter, cfg: RunConfig, setup: TrainingSetup) -> None:
    """The objectives ``task.objective_names(cfg)`` declared (and the early checks used)
    are the ones it built; a mismatch is a bug of the adapter, named as such."""
    declared = task.objective_names(cfg)
    if declared is not None and sorted(declared) != sorted(setup.objectives):
        raise TypeError(f"task {task.name!r}: objective_names() gave {sorted(declared)} but "
                        f"build() made objectives {sorted(setup.objectives)}")


# ------------------------------------------------------------------------------ the run
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
    task.check(cfg)
    check_config(cfg)
    run_dir = Path(cfg.out) if cfg.out is not None else None
    main = is_main_process()
    refusal = None
    if run_dir is not None and main:
        try:
            check_run_dir(run_dir, cfg, resume=resume, overwrite=overwrite)
        except Exception as err:
            refusal = err
    _raise_everywhere(refusal, run_dir)
    ctx = ctx or make_context(cfg, run_dir)
    ctx.hardware = hardware
    with cpu_threads(cfg.threads), stop_on_sigterm():
        setup = _prepare_and_build(task, cfg, ctx, prepared)
        check_declared_objectives(task, cfg, setup)
        check_setup(setup, cfg)
        opened, mode = _open(run_dir, cfg, resume, overwrite, main)
        try:
            return _train_and_report(task, cfg, ctx, setup, run_dir, opened, mode,
                                     stop_after, plots)
        finally:
            if opened is not None:
                opened.release()


def _raise_everywhere(failure: BaseException | None, run_dir: Path | None) -> None:
    """Rank 0's refusal of the run directory raises on every rank (the others would wait
    for rank 0 in the next collective until its timeout)."""
    from moopt import distributed as mdist

    error = None
    if mdist.world_size() > 1 and run_dir is not None:
        error = mdist.broadcast_object(
            None if failure is None else f"{type(failure).__name__}: {failure}")
    if failure is not None:
        raise failure
    if error is not None:
        from moopt.runner.rundir import RunDirError

        raise RunDirError(f"rank 0 could not open the run directory: {error}")


def _prepare_and_build(task: TaskAdapter, cfg: RunConfig, ctx: RunContext,
                       prepared: Any) -> TrainingSetup:
    if prepared is _UNSET:
        from moopt import distributed as mdist

        main = is_main_process()
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
        return task.build(cfg, ctx)


def _open(run_dir: Path | None, cfg: RunConfig, resume: bool, overwrite: bool,
          main: bool) -> tuple[OpenedRunDir | None, str]:
    """Open the run directory on rank 0 and tell every rank the mode (fresh / resume); a
    refusal raises on every rank."""
    from moopt import distributed as mdist

    opened: OpenedRunDir | None = None
    decision: dict[str, Any] = {"mode": "fresh"}
    failure: BaseException | None = None
    if run_dir is not None and main:
        try:
            opened = open_run_dir(run_dir, cfg, resume=resume, overwrite=overwrite)
            decision = {"mode": opened.mode}
        except Exception as err:
            failure = err
            decision = {"error": f"{type(err).__name__}: {err}"}
    if mdist.world_size() > 1 and run_dir is not None:
        decision = mdist.broadcast_object(decision)
    if failure is not None:
        raise failure
    if "error" in decision:
        from moopt.runner.rundir import RunDirError

        raise RunDirError(f"rank 0 could not open the run directory: {decision['error']}")
    return opened, decision["mode"]


def _add(*parts: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, 0.0) + float(value)
    return out


def _train_and_report(task: TaskAdapter, cfg: RunConfig, ctx: RunContext,
                      setup: TrainingSetup, run_dir: Path | None,
                      opened: OpenedRunDir | None, mode: str, stop_after: int | None,
                      plots: bool) -> RunResult:
    writes = opened is not None
    earlier: dict[str, float] = {}
    if writes and mode == "resume":
        earlier = dict((read_status(run_dir) or {}).get("timings") or {})
    start = time.perf_counter()

    def timings(eval_seconds: float = 0.0) -> dict[str, float]:
        """Cumulative stage times while training: earlier parts, then this one so far."""
        spent = time.perf_counter() - start
        return _add(earlier, ctx.timings,
                    {"train": spent - eval_seconds, "evaluate": eval_seconds})

    hardware = ctx.hardware.describe() if ctx.hardware is not None else {}

    def status(state: str, **extra: Any) -> None:
        if writes:
            write_json_atomic(run_dir / STATUS_NAME,
                              {"status": state, "mode": mode, "pid": os.getpid(),
                               "hardware": hardware, **extra})

    def on_checkpoint(step: int, eval_seconds: float) -> None:
        status("running", step=step, timings=timings(eval_seconds))

    status("running", timings=_add(earlier, ctx.timings))
    try:
        result = train(setup, cfg, evaluate=lambda: task.evaluate(setup, cfg, ctx),
                       run_dir=run_dir, resume=mode == "resume", stop_after=stop_after,
                       log=ctx.log, on_checkpoint=on_checkpoint, hardware=ctx.hardware)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM
        status("stopped", step=_checkpoint_step(run_dir), timings=timings(),
               reason=str(err) or "interrupted")
        raise
    except BaseException as err:
        status("failed", step=_checkpoint_step(run_dir), timings=timings(),
               error=f"{type(err).__name__}: {err}")
        raise
    elapsed = time.perf_counter() - start
    ctx.timings["train"] = ctx.timings.get("train", 0.0) + elapsed - result.eval_seconds
    ctx.timings["evaluate"] = ctx.timings.get("evaluate", 0.0) + result.eval_seconds
    total = _add(earlier, ctx.timings)
    metrics = dict(result.metrics)
    if result.finished:  # steps refused by nonfinite="skip" (0 unless asked for)
        metrics["skipped_steps"] = float(getattr(result.optimizer, "skipped_steps", 0))
    out = RunResult(metrics, run_dir if writes else None, total, result, setup)
    if not writes:
        return out
    try:
        if result.finished:
            from moopt.runner.report import write_run_report

            flat = dict(metrics)
            flat.update({f"time_{k}_s": v for k, v in total.items()})
            extras = [hardware_section(hardware), *task.report_extras(setup, cfg, ctx)]
            write_run_report(run_dir, cfg, flat, result.history, total, extras, plots=plots)
            write_json_atomic(run_dir / "metrics.json", flat)
    except BaseException as err:
        status("failed", step=result.step, timings=total, error=f"{type(err).__name__}: {err}")
        raise
    status("finished" if result.finished else "stopped", step=result.step, timings=total)
    return out


def hardware_section(hardware: dict[str, Any]) -> ReportSection:
    """The report's record of where the run computed (device, precision, ranks)."""
    rows = "\n".join(f"- {key}: `{value}`" for key, value in hardware.items())
    return ReportSection("Hardware", rows or "- not recorded")


def _checkpoint_step(run_dir: Path | None) -> int | None:
    if run_dir is None or not has_checkpoint(run_dir):
        return None
    with contextlib.suppress(Exception):
        return checkpoint_step(run_dir)
    return None


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into :class:`RunStopped` (a ``KeyboardInterrupt``) for the block, so a
    terminated run records ``stopped`` like Ctrl-C does. Only in the main thread, and only
    where nobody else has installed a SIGTERM handler."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise RunStopped(signum)

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
