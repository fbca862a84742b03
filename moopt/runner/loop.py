"""The training loop shared by every task.

Alternating schedules: each step computes the loss of the objective the schedule names,
back-propagates it and calls ``opt.step(objective=name)``. Joint schedule: each step
computes every objective's loss, ``opt.backward({name: loss})`` keeps the gradients apart,
and ``opt.step(weights=...)`` combines them as the sharing policy defines.

Every ``eval_every`` steps the task evaluates; every ``checkpoint_every`` steps (and at the
end) a checkpoint is written, from which ``resume`` continues bit-for-bit as if the run had
never stopped (same parameters, optimizer state, schedule position, batches and RNG).

Example:
    >>> import torch
    >>> from moopt.runner import RunConfig, TrainObjective, TrainingSetup
    >>> from moopt.runner.loop import train
    >>> w = torch.nn.Linear(1, 1, bias=False)
    >>> setup = TrainingSetup(w, {
    ...     "up": TrainObjective(lambda: (w.weight - 1).pow(2).sum()),
    ...     "down": TrainObjective(lambda: (w.weight + 1).pow(2).sum())})
    >>> result = train(setup, RunConfig(steps=6, lr=0.1, policy="decoupled", progress=False))
    >>> result.step
    6
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moopt.errors import MooptError
from moopt.runner import checkpoint as ckpt
from moopt.runner import finite
from moopt.runner.config import ConfigError, RunConfig
from moopt.runner.history import History
from moopt.runner.task import TrainingSetup

EvaluateFn = Callable[[], dict[str, float]]


class TrainingError(MooptError, RuntimeError):
    """Training cannot go on (a non-finite loss, a broken checkpoint...)."""


@dataclass
class TrainResult:
    """What :func:`train` returns: final step, last evaluation, history, optimizer."""

    step: int
    metrics: dict[str, float]
    history: History
    optimizer: Any
    eval_seconds: float = 0.0
    finished: bool = True
    extras: dict[str, Any] = field(default_factory=dict)


def is_main_process() -> bool:
    """True unless this is a non-zero rank of an initialised torch.distributed job."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def total_steps(cfg: RunConfig, setup: TrainingSetup) -> int:
    """``cfg.steps``, or ``cfg.epochs`` times the task's steps per epoch (default 100)."""
    if cfg.epochs is not None:
        if not setup.steps_per_epoch:
            raise ConfigError(
                f"config key 'epochs' ({cfg.epochs}) needs the task to define steps_per_epoch;"
                " set 'steps' instead"
            )
        return max(1, math.ceil(cfg.epochs * setup.steps_per_epoch))
    return cfg.steps if cfg.steps is not None else 100


def make_optimizer(setup: TrainingSetup, cfg: RunConfig) -> Any:
    """The :class:`moopt.MultiObjectiveOptimizer` described by ``cfg``."""
    from moopt.optimizer import MultiObjectiveOptimizer

    names = list(setup.objectives)
    for key, mapping in (("lr_ratios", cfg.lr_ratios), ("weights", cfg.weights or {})):
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ConfigError(
                f"config key {key!r} names unknown objective(s) {unknown}; objectives: {names}"
            )
    params = setup.params
    if params is None:
        params = [p for p in setup.model.parameters() if p.requires_grad]
    return MultiObjectiveOptimizer(
        params,
        objectives=names,
        policy=cfg.policy,
        storage=cfg.storage,
        lr=cfg.lr,
        betas=cfg.betas,
        base_betas=cfg.base_betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        lr_ratios=cfg.lr_ratios or None,
        **cfg.optimizer_options,
    )


def make_schedule(cfg: RunConfig, names: list[str]) -> Iterator[str] | None:
    """The schedule of ``cfg`` over ``names`` (``None`` for joint mode)."""
    from moopt import schedules

    spec = cfg.schedule
    if spec == "joint":
        return None
    if spec is None or spec == "round_robin":
        return schedules.RoundRobin(names)
    unknown = sorted(set(spec) - set(names))
    missing = sorted(set(names) - set(spec))
    if unknown or missing:
        raise ConfigError(
            f"config key 'schedule' {spec} must give a frequency for exactly the objectives "
            f"{names} (unknown: {unknown}, missing: {missing})"
        )
    return schedules.Alternating(dict(spec))


def _finite_losses(losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
    """The losses as floats; a non-finite one on any rank stops every rank."""
    values = {name: float(loss.detach()) for name, loss in losses.items()}
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if finite.any_rank(bool(bad)):
        where = (f"objective {bad[0]!r} gave a non-finite loss {values[bad[0]]}" if bad
                 else "another rank got a non-finite loss")
        raise TrainingError(f"{where} at step {step}")
    return values


def _nonfinite_message(what: str, first: int, last: int, stepped: list[tuple[int, str]],
                       saved: int | None) -> str:
    """Why the run stops: ``what`` became NaN/inf in steps ``first``..``last``."""
    names = sorted({name for s, name in stepped if first <= s <= last})
    which = f" (objective{'s' if len(names) > 1 else ''} {', '.join(names)})" if names else ""
    when = f"step {last}{which}" if first == last else f"one of steps {first}-{last}{which}"
    kept = (f"the checkpoint of step {saved} is kept" if saved is not None
            else "no checkpoint was written")
    return (f"{what} became NaN or infinite in {when}; the run stops and {kept}. An infinite "
            "gradient with a finite loss does this: pass optimizer_options.nonfinite='skip' "
            "(skip such steps) or 'raise', or clip gradients (max_grad_norm)")


def _clean_metrics(raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise TypeError(f"evaluate() must return a dict of floats, got {type(raw).__name__}")
    out = {}
    for key, value in raw.items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"evaluate() returned a non-number for metric {key!r}: {value!r}"
            ) from None
    return out


def train(
    setup: TrainingSetup,
    cfg: RunConfig,
    *,
    evaluate: EvaluateFn | None = None,
    run_dir: Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
    on_checkpoint: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``setup`` as ``cfg`` says.

    ``run_dir``: where history and checkpoints go (``None``: nothing is written).
    ``resume``: continue from ``run_dir``'s checkpoint (start fresh when there is none).
    ``stop_after``: stop (with a checkpoint) after this many steps of this call, as an
    interruption would; used to test resumption. ``on_checkpoint(step, eval_seconds)``:
    called after each checkpoint is written.
    """
    import time

    main = is_main_process()
    writes = run_dir is not None and main
    names = list(setup.objectives)
    opt = make_optimizer(setup, cfg)
    schedule = make_schedule(cfg, names)
    from moopt import distributed as mdist

    if mdist.world_size() > 1:
        # Same objective on every rank each step, gradients averaged across ranks.
        mdist.sync_steps(opt, schedule)
    if schedule is None and cfg.max_grad_norm is not None:
        raise ConfigError("config key 'max_grad_norm' is not supported with schedule 'joint'")
    weights = {n: spec.weight for n, spec in setup.objectives.items()}
    weights.update(cfg.weights or {})
    params = [p for g in opt.param_groups for p in g["params"]]
    n_steps = total_steps(cfg, setup)
    history = History(run_dir / "history.jsonl" if writes else None)

    step = 0
    metrics: dict[str, float] = {}
    # Rank 0 decides whether and from which step to resume; every rank loads that checkpoint.
    state = ckpt.agreed_checkpoint(run_dir) if resume and run_dir is not None else None
    if state is not None:
        setup.model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ckpt.load_state_of(schedule, state["schedule"], "the schedule")
        for name, spec in setup.objectives.items():
            ckpt.load_state_of(spec.batches, state["streams"].get(name), f"batches of {name!r}")
        for key, obj in setup.stateful.items():
            ckpt.load_state_of(obj, state["stateful"].get(key), key)
        ckpt.restore_rng(state["rng"])
        step = int(state["step"])
        metrics = dict(state.get("metrics", {}))
        history.truncate(step)
        if log:
            log(f"resumed from step {step} of {n_steps}")
    elif writes:
        history.truncate(-1)  # a fresh run starts with an empty history
    # Non-finite values: parameters are checked after every step, the whole model state and
    # the optimizer state before every checkpoint (the steps since then are the suspects).
    stepped: list[tuple[int, str]] = []
    saved: int | None = step if state is not None else None
    checked = step

    def check_before_saving() -> None:
        nonlocal checked
        tensors = [(f"model state {k!r}", v) for k, v in setup.model.state_dict().items()
                   if isinstance(v, torch.Tensor)]
        bad = finite.first_nonfinite(tensors + list(finite.optimizer_state(setup.model, opt)))
        if finite.any_rank(bad is not None):
            what = bad or "a tensor on another rank"
            raise TrainingError(_nonfinite_message(what, checked + 1, step, stepped, saved))
        checked = step
        stepped.clear()

    def save() -> None:
        nonlocal saved
        check_before_saving()
        if not writes:
            return
        ckpt.save_checkpoint(run_dir, {
            "step": step,
            "model": setup.model.state_dict(),
            "optimizer": opt.state_dict(),
            "schedule": ckpt.state_of(schedule),
            "streams": {n: ckpt.state_of(s.batches) for n, s in setup.objectives.items()},
            "stateful": {k: ckpt.state_of(o) for k, o in setup.stateful.items()},
            "rng": ckpt.capture_rng(),
            "metrics": metrics,
        }, step=step)
        saved = step
        if on_checkpoint is not None:
            on_checkpoint(step, eval_seconds)

    eval_seconds = 0.0

    def run_eval() -> None:
        nonlocal metrics, eval_seconds
        if evaluate is None:
            return
        start = time.perf_counter()
        was_training = setup.model.training
        metrics = _clean_metrics(evaluate())
        setup.model.train(was_training)
        eval_seconds += time.perf_counter() - start
        history.add({"step": step, "eval": metrics})

    from moopt.runner.progress import stage_progress

    recent: dict[str, float] = {}
    stop_at = n_steps if stop_after is None else min(n_steps, step + stop_after)
    setup.model.train()
    # A bar on a terminal, one line otherwise; nothing off rank 0.
    with stage_progress(f"{cfg.task or 'train'}: training", stop_at - step, bar=cfg.progress,
                        enabled=main and stop_at > step, leave=True) as bar:
        while step < stop_at:
            opt.zero_grad()
            skipped = getattr(opt, "skipped_steps", 0)
            if schedule is None:
                losses = {n: spec.compute() for n, spec in setup.objectives.items()}
                values = _finite_losses(losses, step + 1)
                opt.backward(losses)
                opt.step(weights=weights)
            else:
                name = next(schedule)
                loss = setup.objectives[name].compute()
                values = _finite_losses({name: loss}, step + 1)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step(objective=name)
            step += 1
            stepped.extend((step, n) for n in values)
            bad = finite.first_nonfinite(finite.parameters(setup.model, opt))
            if finite.any_rank(bad is not None):
                raise TrainingError(_nonfinite_message(bad or "a parameter on another rank",
                                                       step, step, stepped, saved))
            skip = getattr(opt, "skipped_steps", 0) != skipped  # nonfinite="skip" refused it
            for name, value in values.items():
                record = {"step": step, "objective": name, "loss": value}
                history.add({**record, "skipped": True} if skip else record)
                recent[name] = value
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in recent.items()}, refresh=False)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < n_steps:
                run_eval()
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save()
    opt.zero_grad()
    finished = step >= n_steps
    if finished:
        if not history.evals() or history.evals()[-1][0] != step:
            run_eval()
        elif not metrics:
            metrics = history.evals()[-1][1]
    save()
    return TrainResult(step, metrics, history, opt, eval_seconds, finished)
