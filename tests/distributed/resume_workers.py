"""Functions run on every rank by tests/distributed/test_runner_resume.py (see
harness.run_ranks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moopt import distributed as mdist
from moopt.integrity import CheckpointError
from moopt.runner import checkpoint as ckpt
from moopt.runner import finite
from moopt.runner.loop import TrainingError, _reported_losses
from tests.distributed import workers
from tests.distributed.harness import write_result


def _joint_step(model: torch.nn.Module, opt: Any, rank: int, world: int) -> None:
    for name in workers.OBJECTIVES:
        workers.loss_of(model, name, 0, torch.float64, rank, world).backward()
        opt.stash_grads(name)
    opt.step()
    opt.zero_grad()


def agreement(rank: int, world: int, out: Path) -> None:
    results: dict[str, Any] = {}

    # 1. Rank 0's optimizer has taken 2 steps (as after a resume), rank 1's none; both
    #    make their first call through the guard in joint mode.
    model = workers.make_model()
    opt = workers.make_opt(model, "bridged", "fp32")
    if rank == 0:
        workers.train(model, opt, range(2), "joint", 0, 1)
    guard = mdist.StepGuard(opt)
    try:
        _joint_step(model, opt, rank, world)
        results["joint_guard"] = "no error"
    except mdist.DistributedMismatchError as exc:
        results["joint_guard"] = str(exc)
    guard.remove()
    model = workers.make_model()
    opt = workers.make_opt(model, "bridged", "fp32")
    guard = mdist.StepGuard(opt)
    try:
        _joint_step(model, opt, rank, world)
        _joint_step(model, opt, rank, world)
        results["same_guard"] = "no error"
    except mdist.DistributedMismatchError as exc:
        results["same_guard"] = str(exc)
    guard.remove()

    # 2. Each rank sees its own run directory (no shared filesystem): rank 0 finds a
    #    checkpoint, rank 1 does not.
    own = out / f"run-rank{rank}"
    if rank == 0:
        ckpt.save_checkpoint(own, {"step": 3}, step=3)
    try:
        ckpt.agreed_checkpoint(own)
        results["unshared"] = "no error"
    except CheckpointError as exc:
        results["unshared"] = str(exc)
    shared = out / "shared-run"
    if rank == 0:
        ckpt.save_checkpoint(shared, {"step": 3}, step=3)
    mdist.barrier()
    results["shared_step"] = ckpt.agreed_checkpoint(shared)["step"]

    # 3. A NaN loss on rank 1 only; a NaN parameter on rank 1 only.
    value = float("nan") if rank == 1 else 1.0
    try:
        _reported_losses({"a": torch.tensor(value)}, world, 5)
        results["loss"] = "no error"
    except TrainingError as exc:
        results["loss"] = str(exc)
    bad = finite.first_nonfinite([("w", torch.tensor([value]))])
    results["params"] = finite.any_rank(bad is not None)
    write_result(out, rank, results, "agreement")
