"""Functions run on every rank by the distributed tests (see harness.run_ranks).

A tiny float64 MLP trained for a few steps on two objectives whose global batches are
drawn from a seed per (step, objective); each rank takes its half of every global batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

import moopt
import moopt.states.bf16  # noqa: F401  (registers "bf16")
import moopt.states.int8
from moopt import distributed as mdist
from moopt.errors import NonFiniteGradientError, StateMismatchError
from moopt.schedules import Alternating
from tests.distributed.harness import full_params, write_result
from tests.distributed.runner_workers import RUNNER_CASES, run_cases

OBJECTIVES = ("forget", "retain")
GLOBAL_BATCH = 8
POLICIES = ("shared", "decoupled", "bridged")
STORAGES = ("fp32", "bf16", "int8")
DEFAULT_CASES = (("shared", "fp32", "alternating"), ("decoupled", "fp32", "joint"),
                 ("bridged", "fp32", "alternating"), ("bridged", "fp32", "joint"),
                 ("bridged", "int8", "alternating"), ("shared", "bf16", "joint"))


IN = 16


def storage(name: str) -> Any:
    # "int8": min_size=0 quantizes even these tiny tensors, so 8-bit paths are exercised.
    # "int8/256": only tensors of 256+ values, so FSDP shards hold whole 256-value blocks.
    if name.startswith("int8"):
        return moopt.states.int8.Int8Storage(min_size=int(name.partition("/")[2] or 0))
    return name


def make_model(dtype: torch.dtype = torch.float64, width: int = 8) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, 3)).to(dtype)


def make_opt(model: torch.nn.Module, policy: str, store: str) -> moopt.MultiObjectiveOptimizer:
    return moopt.MultiObjectiveOptimizer(model.parameters(), objectives=OBJECTIVES,
                                         policy=policy, storage=storage(store), lr=0.05,
                                         weight_decay=0.01, lr_ratios={"forget": 0.5})


def batch(step: int, name: str, dtype: torch.dtype, rank: int, world: int,
          size: int = GLOBAL_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + OBJECTIVES.index(name))
    x = torch.randn(size, IN, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(size, 3, generator=g, dtype=torch.float64).to(dtype)
    part = size // world
    return x[rank * part:(rank + 1) * part], y[rank * part:(rank + 1) * part]


def loss_of(model: torch.nn.Module, name: str, step: int, dtype: torch.dtype, rank: int,
            world: int) -> torch.Tensor:
    x, y = batch(step, name, dtype, rank, world)
    mse = (model(x) - y).pow(2).mean()
    return -0.3 * mse if name == "forget" else mse


def train(model: torch.nn.Module, opt: Any, steps: range, mode: str, rank: int, world: int,
          dtype: torch.dtype = torch.float64, average: bool = False) -> None:
    """``average``: no DDP; gradients are averaged by moopt.distributed.average_gradients."""
    schedule = Alternating({"forget": 1, "retain": 2})
    schedule.position = steps.start
    for step in steps:
        if mode == "alternating":
            name = next(schedule)
            loss_of(model, name, step, dtype, rank, world).backward()
            if average:
                mdist.average_gradients(opt)
            opt.step(objective=name)
        elif mode == "joint":  # one forward + backward per objective, gradients stashed
            for name in OBJECTIVES:
                loss_of(model, name, step, dtype, rank, world).backward()
                opt.stash_grads(name)
            opt.step()
        else:  # "joint_backward": opt.backward over losses of separate forwards
            losses = {n: loss_of(model, n, step, dtype, rank, world) for n in OBJECTIVES}
            opt.backward(losses)
            if average:
                mdist.average_gradients(opt)
            opt.step()
        opt.zero_grad()


def deviation(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict[str, float]:
    abs_dev = max(float((x - y).abs().max()) for x, y in zip(a, b))
    scale = max(float(y.abs().max()) for y in b)
    return {"abs": abs_dev, "rel": abs_dev / scale}


def reference(policy: str, store: str, mode: str, steps: int,
              dtype: torch.dtype = torch.float64, width: int = 8) -> list[torch.Tensor]:
    model = make_model(dtype, width)
    opt = make_opt(model, policy, store)
    train(model, opt, range(steps), "joint" if mode == "joint_backward" else mode, 0, 1, dtype)
    return [p.detach() for p in model.parameters()]


# --------------------------------------------------------------------------- DDP
def ddp_equivalence(rank: int, world: int, out: Path, steps: int, full: bool) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    results: dict[str, Any] = {}
    if full:
        cases = [(p, s, m, torch.float64) for p in POLICIES for s in STORAGES
                 for m in ("alternating", "joint")]
    else:  # every policy, storage and mode at least once
        cases = [(p, s, m, torch.float64) for p, s, m in DEFAULT_CASES]
    cases += [("bridged", "fp32", "alternating", torch.float32),
              ("bridged", "fp32", "joint_backward", torch.float64)]
    for policy, store, mode, dtype in cases:
        model = DDP(make_model(dtype))
        opt = make_opt(model, policy, store)
        key = f"{policy}/{store}/{mode}/{str(dtype)[6:]}"
        try:
            train(model, opt, range(steps), mode, rank, world, dtype)
        except Exception as exc:  # recorded: the test reports which pattern fails
            results[key] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        if rank == 0:
            ref = reference(policy, store, mode, steps, dtype)
            results[key] = deviation([p.detach() for p in model.module.parameters()], ref)
    for mode in ("alternating", "joint_backward"):  # no DDP: gradients averaged by moopt
        model = make_model()
        opt = make_opt(model, "bridged", "fp32")
        if mode == "alternating":  # through sync_steps' pre-hook
            mdist.sync_steps(opt)
        train(model, opt, range(steps), mode, rank, world, average=mode != "alternating")
        if rank == 0:
            results[f"average_gradients/bridged/fp32/{mode}/float64"] = deviation(
                [p.detach() for p in model.parameters()], reference("bridged", "fp32", mode, steps))
    write_result(out, rank, results, "ddp")


# --------------------------------------------------------------------------- FSDP2
def shard(model: torch.nn.Module) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def local_snapshot(model: torch.nn.Module, opt: Any) -> list[torch.Tensor]:
    tensors = [p.detach().to_local().clone() for p in model.parameters()]
    for p in model.parameters():
        for _, v in sorted(opt.state[p].items()):
            if isinstance(v, torch.Tensor):
                tensors.append(_local(v).clone())
            else:
                tensors.append(torch.tensor(v))
    return tensors


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def fsdp_equivalence(rank: int, world: int, out: Path, steps: int, full: bool) -> None:
    results: dict[str, Any] = {}
    cases = [(p, s, m) for p in POLICIES for s in ("fp32", "bf16", "int8/256")
             for m in ("alternating", "joint")]
    if not full:
        cases = [(p, s.replace("int8", "int8/256"), m) for p, s, m in DEFAULT_CASES]
    for policy, store, mode in cases:
        # 8-bit blocks are cut per shard: a width whose shards hold whole blocks.
        width = 64 if store == "int8/256" else 8
        model = shard(make_model(width=width))
        opt = make_opt(model, policy, store)
        train(model, opt, range(steps), mode, rank, world)
        got = full_params(model)
        key = f"{policy}/{store}/{mode}"
        if rank == 0:
            results[key] = deviation(got, reference(policy, store, mode, steps, width=width))
        results[f"memory/{key}"] = opt.memory_report()["total_bytes"]
    for mode in ("joint_backward",):
        model = shard(make_model())
        opt = make_opt(model, "bridged", "fp32")
        train(model, opt, range(steps), mode, rank, world)
        got = full_params(model)
        if rank == 0:
            results[f"bridged/fp32/{mode}"] = deviation(got, reference("bridged", "fp32", mode,
                                                                       steps))
    # float32 end to end, and the unsharded optimizer's state size for the memory ratio.
    model = shard(make_model(torch.float32))
    opt = make_opt(model, "bridged", "fp32")
    train(model, opt, range(steps), "alternating", rank, world, torch.float32)
    got = full_params(model)
    if rank == 0:
        results["bridged/fp32/alternating/float32"] = deviation(
            got, reference("bridged", "fp32", "alternating", steps, torch.float32))
        model1 = make_model()
        single = make_opt(model1, "bridged", "fp32")
        train(model1, single, range(1), "alternating", 0, 1)
        results["memory/unsharded/bridged/fp32"] = single.memory_report()["total_bytes"]
    write_result(out, rank, results, "fsdp")


# --------------------------------------------------------------------------- checkpoints
def fsdp_checkpoint(rank: int, world: int, out: Path, steps: int, full: bool) -> None:
    results: dict[str, Any] = {}
    for store in STORAGES if full else ("fp32", "int8"):
        path = out / f"ckpt-{store}"
        model = shard(make_model())
        opt = make_opt(model, "bridged", store)
        train(model, opt, range(steps), "alternating", rank, world)
        mdist.save_checkpoint(path, model, opt, extra={"step": steps})
        saved = full_params(model)
        if rank == 0:
            torch.save(saved, out / f"saved-params-{store}.pt")
        train(model, opt, range(steps, 2 * steps), "alternating", rank, world)
        want = local_snapshot(model, opt)
        if rank == 0:
            torch.save(full_params(model), out / f"continued-params-{store}.pt")
        else:
            full_params(model)
        model2 = shard(make_model(width=8))
        with torch.no_grad():  # start from different weights: the load must overwrite them
            for p in model2.parameters():
                p.add_(1.0)
        opt2 = make_opt(model2, "bridged", store)
        extra = mdist.load_checkpoint(path, model2, opt2)
        train(model2, opt2, range(steps, 2 * steps), "alternating", rank, world)
        got = local_snapshot(model2, opt2)
        results[store] = {
            "extra": extra,
            "bit_identical": len(got) == len(want) and all(
                a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(got, want)),
            "tensors": len(got),
        }
        # Loading with another policy fails on every rank, before anything changes.
        model3 = shard(make_model())
        opt3 = make_opt(model3, "shared", store)
        before = [p.detach().to_local().clone() for p in model3.parameters()]
        try:
            mdist.load_checkpoint(path, model3, opt3)
            results[f"{store}/wrong_policy"] = "no error"
        except StateMismatchError as exc:
            unchanged = all(torch.equal(a, p.detach().to_local())
                            for a, p in zip(before, model3.parameters()))
            results[f"{store}/wrong_policy"] = {"error": str(exc), "unchanged": unchanged}
    write_result(out, rank, results, "checkpoint")


# --------------------------------------------------------------------------- bad input
def mismatches(rank: int, world: int, out: Path) -> None:
    results: dict[str, str] = {}

    def attempt(label: str, fn: Any) -> None:
        try:
            fn()
            results[label] = "no error"
        except mdist.DistributedMismatchError as exc:
            results[label] = str(exc)

    model = make_model()
    objectives = OBJECTIVES if rank == 0 else ("forget", "retain_other")
    odd = moopt.MultiObjectiveOptimizer(model.parameters(), objectives=objectives)
    attempt("objectives", lambda: mdist.check_consistent(odd))
    attempt("policy", lambda: mdist.check_consistent(
        make_opt(model, "bridged" if rank == 0 else "decoupled", "fp32")))
    schedule = Alternating({"forget": 1, "retain": 5})
    schedule.position = rank
    attempt("schedule", lambda: mdist.check_consistent(make_opt(model, "bridged", "fp32"),
                                                       schedule))

    opt = make_opt(model, "bridged", "fp32")
    guard = mdist.StepGuard(opt)

    def step_as(name: str, with_grads: bool = True) -> None:
        opt.zero_grad()
        if with_grads:
            loss_of(model, name, 0, torch.float64, rank, world).backward()
        opt.step(objective=name)

    attempt("same_step", lambda: step_as("forget"))
    attempt("objective_step", lambda: step_as("forget" if rank == 0 else "retain"))
    attempt("missing_grads", lambda: step_as("retain", with_grads=rank == 0))
    opt.zero_grad()
    results["checked_steps"] = str(guard.checked_steps)
    write_result(out, rank, results, "mismatch")


def nonfinite_checks(rank: int, world: int, out: Path) -> None:
    """A NaN in rank 1's shard of one FSDP2 gradient: with nonfinite="raise" every rank
    raises, with "skip" every rank skips, and no rank changes its shard."""
    results: dict[str, Any] = {}
    for mode in ("raise", "skip"):
        model = shard(make_model(torch.float32))
        opt = moopt.MultiObjectiveOptimizer(model.parameters(), objectives=OBJECTIVES,
                                            policy="bridged", nonfinite=mode)
        loss_of(model, "forget", 0, torch.float32, rank, world).backward()
        if rank == 1:
            next(iter(model.parameters())).grad.to_local().view(-1)[0] = float("nan")
        before = [p.detach().to_local().clone() for p in model.parameters()]
        try:
            opt.step(objective="forget")
            outcome = "stepped"
        except NonFiniteGradientError:
            outcome = "raised"
        results[mode] = {
            "outcome": outcome, "skipped_steps": opt.skipped_steps, "state": len(opt.state),
            "unchanged": all(torch.equal(a, p.detach().to_local())
                             for a, p in zip(before, model.parameters()))}
    write_result(out, rank, results, "nonfinite")


def everything(rank: int, world: int, out: Path, steps: int, full: bool) -> None:
    """All checks in one job: starting processes is the expensive part on a small machine.
    The job ends with rank 1 failing on purpose while rank 0 waits in DDP's all-reduce."""
    seconds = {}
    for part, call in (("mismatch", lambda: mismatches(rank, world, out)),
                       ("nonfinite", lambda: nonfinite_checks(rank, world, out)),
                       ("ddp", lambda: ddp_equivalence(rank, world, out, steps, full)),
                       ("fsdp", lambda: fsdp_equivalence(rank, world, out, steps, full)),
                       ("checkpoint", lambda: fsdp_checkpoint(rank, world, out, steps, full)),
                       ("runner", lambda: run_cases(rank, world, out / "runner", RUNNER_CASES))):
        start = time.perf_counter()
        call()
        seconds[part] = round(time.perf_counter() - start, 2)
    write_result(out, rank, {"done": True, "seconds": seconds}, "done")
    failing_rank(rank, world, out)


def failing_rank(rank: int, world: int, out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(make_model())
    opt = make_opt(model, "bridged", "fp32")
    for step in range(3):
        if rank == 1 and step == 1:
            raise RuntimeError("rank 1 fails on purpose at step 1")
        loss_of(model, "retain", step, torch.float64, rank, world).backward()
        opt.step(objective="retain")
        opt.zero_grad()


# --------------------------------------------------------------------------- timing
def step_time(rank: int, world: int, out: Path, steps: int, width: int) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.Tanh(),
                                torch.nn.Linear(width, width))
    if world > 1:
        model = DDP(model)
    opt = moopt.MultiObjectiveOptimizer(model.parameters(), objectives=OBJECTIVES, lr=1e-3)
    x = torch.randn(64 // world, width)
    times = []
    for step in range(steps):
        start = time.perf_counter()
        model(x).pow(2).mean().backward()
        opt.step(objective=OBJECTIVES[step % 2])
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    write_result(out, rank, {"median_s": sorted(times[2:])[len(times[2:]) // 2]}, "time")
