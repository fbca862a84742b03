"""The training loop shared by every task.

Alternating schedules: each step computes the loss of the objective the schedule names,
back-propagates it and calls ``opt.step(objective=name)``. Joint schedule: each step
computes every objective's loss, ``opt.backward({name: loss})`` keeps the gradients apart,
and ``opt.step(weights=...)`` combines them as the sharing policy defines.

With ``grad_accum`` = k every objective of a step draws k micro-batches, back-propagates
each (weighted by its share of the step's items) and the optimizer steps once; under a
distributed run each rank takes its share of every micro-batch (see
:mod:`moopt.runner.accumulation`). The model is placed first: precision, activation
checkpointing, device and the ``parallel`` wrapper (:mod:`moopt.runner.placement`);
forward passes and losses run under autocast with ``precision="bf16-mixed"``.

Every ``eval_every`` steps the task evaluates; every ``checkpoint_every`` steps (and at the
end) a checkpoint is written, from which ``resume`` continues bit-for-bit as if the run had
never stopped (same parameters, optimizer state, schedule position, batches and RNG).

Under ``parallel="fsdp"`` every rank writes its shards of the model and optimizer state
with ``torch.distributed.checkpoint`` into the checkpoint's folder (``shards/``), beside
rank 0's ``state.pt`` with everything else; the manifest covers both.

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
from moopt.runner.accumulation import Piece, step_pieces
from moopt.runner.batches import move_batch
from moopt.runner.config import ConfigError, RunConfig
from moopt.runner.devices import Hardware, resolve_hardware
from moopt.runner.history import History
from moopt.runner.objective_keys import check_objective_keys
from moopt.runner.placement import place_model
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
    """``cfg.steps``, or ``cfg.epochs`` times the task's steps per epoch (default 100).
    A task's epoch counts one batch per step: with ``grad_accum`` = k a step draws k, so an
    epoch is k times fewer optimizer steps."""
    if cfg.epochs is not None:
        if not setup.steps_per_epoch:
            raise ConfigError(
                f"config key 'epochs' ({cfg.epochs}) needs the task to define steps_per_epoch;"
                " set 'steps' instead"
            )
        return max(1, math.ceil(cfg.epochs * setup.steps_per_epoch / cfg.grad_accum))
    return cfg.steps if cfg.steps is not None else 100


def make_optimizer(setup: TrainingSetup, cfg: RunConfig, params: Any = None) -> Any:
    """The :class:`moopt.MultiObjectiveOptimizer` described by ``cfg``, over ``params``
    (default: ``setup.params``, else the model's parameters with ``requires_grad``)."""
    from moopt.optimizer import MultiObjectiveOptimizer

    names = list(setup.objectives)
    check_objective_keys(cfg, names)
    if params is None:
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
    check_objective_keys(cfg, names)
    return schedules.Alternating(dict(spec))


def _reported_losses(logged: dict[str, torch.Tensor], world: int,
                     step: int) -> dict[str, float]:
    """The step's loss per objective, summed over the ranks (one all-reduce for all of
    them), as floats; a non-finite one on any rank stops every rank (the sum is then
    non-finite everywhere)."""
    if world > 1:
        names = list(logged)
        both = torch.stack([logged[n].detach().to(torch.float64) for n in names])
        torch.distributed.all_reduce(both)
        values = dict(zip(names, both.tolist()))
    else:
        values = {n: float(v.detach()) for n, v in logged.items()}
    bad = [name for name, value in values.items() if not math.isfinite(value)]
    if bad:
        raise TrainingError(
            f"objective {bad[0]!r} gave a non-finite loss {values[bad[0]]} at step {step}")
    return values


SHARDS = "shards"  # the DCP folder inside a checkpoint folder (parallel="fsdp")


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
    hardware: Hardware | None = None,
) -> TrainResult:
    """Train ``setup`` as ``cfg`` says.

    ``run_dir``: where history and checkpoints go (``None``: nothing is written).
    ``resume``: continue from ``run_dir``'s checkpoint (start fresh when there is none).
    ``stop_after``: stop (with a checkpoint) after this many steps of this call, as an
    interruption would; used to test resumption. ``on_checkpoint(step, eval_seconds)``:
    called after each checkpoint is written. ``hardware``: the resolved device, precision
    and parallel mode (default: resolved from ``cfg``).
    """
    import time

    from moopt import distributed as mdist

    hw = hardware if hardware is not None else resolve_hardware(cfg)
    main = is_main_process()
    writes = run_dir is not None and main
    names = list(setup.objectives)
    placed = place_model(setup, cfg, hw)
    opt = make_optimizer(setup, cfg, placed.params)
    schedule = make_schedule(cfg, names)
    world, rank = mdist.world_size(), mdist.rank()
    if world > 1:
        # Same objective on every rank each step. Gradients are averaged over the ranks by
        # the wrapper (ddp, fsdp), or here before every step (none).
        mdist.sync_steps(opt, schedule, average_grads=hw.parallel == "none")
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
        if "sharded" in state:  # every rank reads its shards from the agreed checkpoint
            folder = run_dir / ckpt.read_manifest(run_dir)["folder"]
            mdist.load_checkpoint(folder / state["sharded"], placed.model, opt)
        else:
            setup.model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        ckpt.load_state_of(schedule, state["schedule"], "the schedule")
        for name, spec in setup.objectives.items():
            ckpt.load_state_of(spec.batches, state["streams"].get(name), f"batches of {name!r}")
        for key, obj in setup.stateful.items():
            ckpt.load_state_of(obj, state["stateful"].get(key), key)
        ranks = state.get("rng_ranks")  # each rank its own generators
        ckpt.restore_rng(ranks[rank] if ranks and len(ranks) == world else state["rng"])
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
        if run_dir is None:
            return
        rng = ckpt.capture_rng()
        rng_ranks = mdist.gather_object(rng) if world > 1 else None
        payload: dict[str, Any] = {
            "step": step,
            "schedule": ckpt.state_of(schedule),
            "streams": {n: ckpt.state_of(s.batches) for n, s in setup.objectives.items()},
            "stateful": {k: ckpt.state_of(o) for k, o in setup.stateful.items()},
            "rng": rng,
            "metrics": metrics,
        }
        if rng_ranks is not None:
            payload["rng_ranks"] = rng_ranks
        if placed.sharded:
            save_sharded(payload)
        elif writes:
            payload["model"] = setup.model.state_dict()
            payload["optimizer"] = opt.state_dict()
            ckpt.save_checkpoint(run_dir, payload, step=step)
        saved = step
        if on_checkpoint is not None:
            on_checkpoint(step, eval_seconds)

    def save_sharded(payload: dict[str, Any]) -> None:
        """Rank 0 makes the checkpoint folder, every rank writes its shards into it, then
        rank 0 adds state.pt and commits the folder (manifest over every file)."""
        folder = None
        if writes:
            folder = ckpt.new_folder(run_dir, step)
        name = mdist.broadcast_object(None if folder is None else folder.name)
        folder = run_dir / ckpt.FOLDER / name
        try:
            mdist.save_checkpoint(folder / SHARDS, placed.model, opt)
            if writes:
                entry = ckpt.write_state(folder, {**payload, "sharded": SHARDS})
                ckpt.commit(run_dir, folder, step, {ckpt.STATE_NAME: entry})
        except BaseException:
            if writes:
                ckpt.remove_stale(run_dir)  # the unfinished folder; the manifest's stays
            raise
        mdist.barrier()  # nobody goes on (or reads it) before it is committed

    eval_seconds = 0.0

    def run_eval() -> None:
        nonlocal metrics, eval_seconds
        if evaluate is None:
            return
        start = time.perf_counter()
        was_training = setup.model.training
        with hw.autocast():
            metrics = _clean_metrics(evaluate())
        setup.model.train(was_training)
        eval_seconds += time.perf_counter() - start
        history.add({"step": step, "eval": metrics})

    from moopt.runner.progress import stage_progress

    def loss_of(name: str, piece: Piece) -> torch.Tensor:
        spec = setup.objectives[name]
        with hw.autocast():
            if not piece.has_batch:
                return spec.loss()
            return spec.loss(move_batch(piece.batch, hw.device, placed.input_dtype))

    def pieces_of(name: str) -> list[Piece]:
        return step_pieces(setup.objectives[name], accum=cfg.grad_accum, rank=rank,
                           world=world)

    def weigh(loss: torch.Tensor, piece: Piece) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss weighted for backward, and its detached share of the reported loss."""
        weighted = loss if piece.grad_weight == 1.0 else loss * piece.grad_weight
        share = loss.detach()
        return weighted, share if piece.log_weight == 1.0 else share * piece.log_weight

    recent: dict[str, float] = {}
    stop_at = n_steps if stop_after is None else min(n_steps, step + stop_after)
    setup.model.train()
    # A bar on a terminal, one line otherwise; nothing off rank 0.
    with stage_progress(f"{cfg.task or 'train'}: training", stop_at - step, bar=cfg.progress,
                        enabled=main and stop_at > step, leave=True) as bar:
        while step < stop_at:
            opt.zero_grad()
            skipped = getattr(opt, "skipped_steps", 0)
            logged: dict[str, torch.Tensor] = {}
            if schedule is None:
                pieces = {n: pieces_of(n) for n in names}
                # ddp: several backward passes per forward are reduced by hand below.
                with placed.no_sync():
                    for i in range(max(len(p) for p in pieces.values())):
                        losses = {}
                        for n, ps in pieces.items():
                            if i < len(ps):
                                losses[n], share = weigh(loss_of(n, ps[i]), ps[i])
                                logged[n] = share if n not in logged else logged[n] + share
                        opt.backward(losses)
                if hw.parallel == "ddp" and world > 1:
                    mdist.average_gradients(opt)
                values = _reported_losses(logged, world, step + 1)
                opt.step(weights=weights)
            else:
                name = next(schedule)
                pieces_n = pieces_of(name)
                for i, piece in enumerate(pieces_n):
                    # ddp: the gradients of all micro-batches are reduced in the last backward.
                    with placed.no_sync(i < len(pieces_n) - 1):
                        weighted, share = weigh(loss_of(name, piece), piece)
                        weighted.backward()
                    logged[name] = share if name not in logged else logged[name] + share
                values = _reported_losses(logged, world, step + 1)
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
    return TrainResult(step, metrics, history, opt, eval_seconds, finished,
                       extras={"hardware": hw.describe()})
