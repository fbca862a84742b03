"""Distributed training with moopt: DDP, FSDP2, sharded checkpoints, cross-rank checks.

``MultiObjectiveOptimizer`` needs nothing special under ``torch.distributed``:

* DDP: gradients arrive averaged over ranks, every rank takes the same step on its replica.
* FSDP2 (``fully_shard``): parameters, gradients and optimizer state are DTensors sharded
  like the parameters; the optimizer's math is elementwise and runs on the local shard.

This module adds what a multi-process job needs around it: process-group setup with a
timeout (:func:`init_process_group`), rank helpers, a cheap cross-rank consistency check
(:class:`StepGuard`, :func:`check_consistent`) and sharded checkpoints
(:func:`save_checkpoint`, :func:`load_checkpoint`). See docs/distributed.md.

Example (works unchanged in a single process, where the checks are no-ops):
    >>> import torch, moopt
    >>> from moopt import distributed as mdist
    >>> mdist.is_main_process(), mdist.world_size()
    (True, 1)
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = moopt.MultiObjectiveOptimizer(model.parameters(), objectives=["f", "r"])
    >>> guard = mdist.StepGuard(opt)   # under torchrun: raises on every rank on mismatch
    >>> model(torch.ones(2, 3)).sum().backward(); opt.step(objective="f")

(One file on purpose: a ``moopt/dist/`` package would be hidden by the repository's
``.gitignore`` rule ``dist/``.)

Consistency checks
------------------
Every rank must run the same optimizer on the same schedule. A mismatch (different
objectives, policy, storage, schedule; a rank stepping another objective; a rank without
gradients) would otherwise silently diverge the replicas or hang in the next collective.
These checks turn it into a :class:`DistributedMismatchError` raised on *every* rank,
naming the ranks and the values that differ.

Cost: :func:`check_consistent` gathers a small picklable fingerprint (call it once, at the
first step); :class:`StepGuard` gathers 4 int64 numbers per rank per step (one tiny
``all_gather``; ``every=k`` checks every k-th step only).

Example (single process: nothing to compare, the checks pass):
    >>> import torch, moopt
    >>> from moopt.distributed import StepGuard, fingerprint
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = moopt.MultiObjectiveOptimizer([p], objectives=["a", "b"], lr=0.1)
    >>> fingerprint(opt)["policy"]
    'bridged'
    >>> guard = StepGuard(opt)
    >>> p.grad = torch.ones(2); opt.step(objective="a")
    >>> guard.checked_steps
    1
    >>> guard.remove()

Sharded checkpoints
-------------------
Model + optimizer with ``torch.distributed.checkpoint`` (DCP). Every rank writes its own
shards; a load reads the shards it needs, so a checkpoint saved by 2 FSDP2 ranks loads
into 1 process (or 4) when the state allows it.

Every save ends with a manifest, ``moopt-manifest.json``: the size and SHA-256 of each file
(each rank hashes its own shards). A load checks the manifest first (the ranks share the
work) and reads DCP's ``.metadata``, a pickle, with an unpickler that builds only DCP's
metadata records (:func:`moopt.safe_load.loads_dcp_metadata`); shard data is read by DCP
with ``weights_only=True``. A damaged, incomplete or foreign directory, or a crafted
``.metadata``, raises :class:`~moopt.integrity.CheckpointError` on every rank, naming the
file, before anything is read or changed.

Optimizer state is keyed by parameter name (not index). State that is a DTensor (fp32
storage of a DTensor parameter) is saved as is. Plain per-rank state of a DTensor
parameter (bf16 buffers, 8-bit codes: one value per local element) is presented to DCP as
a DTensor laid out like its parameter, so it reshards like the parameter. State with a
per-shard layout of its own (8-bit block scales: quantization blocks are cut per local
shard) is saved per rank and can only be loaded by the same world size and sharding; a
load that cannot honour it raises :class:`~moopt.errors.StateMismatchError` before
anything changes.

Example (single process; the same calls work on every rank of a distributed job):
    >>> import tempfile, torch, moopt
    >>> from moopt.distributed import load_checkpoint, save_checkpoint
    >>> model = torch.nn.Linear(3, 2)
    >>> opt = moopt.MultiObjectiveOptimizer(model.parameters(), objectives=["a", "b"], lr=0.1)
    >>> model(torch.ones(1, 3)).sum().backward(); opt.step(objective="a")
    >>> path = tempfile.mkdtemp()
    >>> save_checkpoint(path, model, opt, extra={"step": 1})
    >>> model2 = torch.nn.Linear(3, 2)
    >>> opt2 = moopt.MultiObjectiveOptimizer(model2.parameters(), objectives=["a", "b"], lr=0.1)
    >>> load_checkpoint(path, model2, opt2)
    {'step': 1}
    >>> bool(torch.equal(model2.weight, model.weight)), opt2.state[model2.weight]["T"]
    (True, 1)
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from moopt import state_format as fmt
from moopt.errors import MooptError, StateMismatchError
from moopt.states.tensors import is_distributed, local

__all__ = [
    "DistributedMismatchError", "StepGuard", "average_gradients", "barrier", "broadcast_object",
    "check_consistent", "gather_object",
    "fingerprint", "init_process_group", "is_initialized", "is_main_process", "load_checkpoint",
    "optimizer_state_dict", "param_names", "rank", "save_checkpoint", "sync_steps",
    "verify_checkpoint", "world_size",
]


# ------------------------------------------------------------ process group

DEFAULT_TIMEOUT_S = 300.0


def is_initialized() -> bool:
    """Whether a default process group exists."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 outside a distributed job)."""
    return torch.distributed.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 outside a distributed job)."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 and outside a distributed job: the process that reports and writes."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    """True when the environment of ``torchrun`` (or another env:// launcher) is present."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_process_group(backend: str | None = None,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Initialise the default process group from the ``torchrun`` environment.

    ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``. Every collective
    then fails after ``timeout_s`` seconds instead of hanging forever when a rank dies.
    Returns the backend. Does nothing (returns the current backend) if already initialised.
    """
    dist = torch.distributed
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this torch build")
    if dist.is_initialized():
        return str(dist.get_backend())
    if not launched_by_torchrun():
        raise RuntimeError("init_process_group() needs RANK, WORLD_SIZE, MASTER_ADDR and "
                           "MASTER_PORT (launch with torchrun)")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return backend


def average_gradients(optimizer: Any) -> int:
    """All-reduce (mean over ranks) every plain gradient the optimizer will use: ``.grad`` and
    the per-objective gradients stashed for joint mode. For training loops that do not wrap
    the model in DDP; one collective per gradient dtype (gradients are flattened into one
    buffer). DTensor gradients (FSDP2) are already reduced and are left alone. Returns the
    number of gradient tensors averaged (0 outside a distributed job)."""
    if world_size() == 1:
        return 0
    grads = [p.grad for g in optimizer.param_groups for p in g["params"]
             if p.grad is not None]
    for stashed in getattr(optimizer, "_joint_grads", {}).values():
        grads.extend(stashed.values())
    grads = [g for g in grads if not is_distributed(g)]
    by_dtype: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault((g.dtype, g.device), []).append(g)
    for tensors in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in tensors])
        torch.distributed.all_reduce(flat)
        flat.div_(world_size())
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()
    return len(grads)


def sync_steps(optimizer: Any, schedule: Any = None, *, average_grads: bool = True,
               check_every: int = 1) -> StepGuard:
    """Make a plain training loop data-parallel-safe with one call after building the
    optimizer: a :class:`StepGuard` plus (``average_grads``) a step pre-hook that runs
    :func:`average_gradients` before every step. Use it when the model is *not* wrapped in
    DDP/FSDP; returns the guard (``guard.remove()`` undoes both hooks)."""
    guard = StepGuard(optimizer, schedule, every=check_every)
    if average_grads:
        def average(opt: Any, args: Any, kwargs: Any) -> None:  # a pre-hook must return None
            average_gradients(opt)

        handle = optimizer.register_step_pre_hook(average)
        remove = guard.remove

        def remove_both() -> None:
            remove()
            handle.remove()

        guard.remove = remove_both  # type: ignore[method-assign]
    return guard


def barrier() -> None:
    """Wait for every rank (no-op outside a distributed job)."""
    if is_initialized():
        torch.distributed.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (a picklable object; ``obj`` itself outside a
    distributed job). For decisions one rank takes for all, such as whether to resume."""
    if world_size() == 1:
        return obj
    box = [obj if rank() == src else None]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` outside a distributed
    job)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


# ------------------------------------------------------- consistency checks
class DistributedMismatchError(MooptError, RuntimeError):
    """Ranks disagree on something that must be identical everywhere (raised on every rank)."""


def _dist_active(group: Any = None) -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _global_shape(p: Tensor) -> list[int]:
    # DTensor.shape is the global (logical) shape already; plain tensors are their own.
    return list(p.shape)


def fingerprint(optimizer: Any, schedule: Any = None) -> dict[str, Any]:
    """What must be equal on every rank: objectives, policy, storage, the parameters' global
    shapes and dtypes per group, the group hyperparameters, and the schedule's state."""
    meta = optimizer._meta()
    groups = []
    for group in optimizer.param_groups:
        hyper = {k: v for k, v in sorted(group.items()) if k != "params"}
        groups.append({
            "shapes": [_global_shape(p) for p in group["params"]],
            "dtypes": [str(p.dtype) for p in group["params"]],
            "hyper": repr(hyper),
        })
    out = {
        "objectives": meta["objectives"],
        "policy": meta["policy"],
        "policy_config": repr(meta["policy_config"]),
        "storage": repr(meta["storage"]),
        "nonfinite": getattr(optimizer, "nonfinite", None),
        "param_groups": groups,
    }
    if schedule is not None:
        state = schedule.state_dict() if hasattr(schedule, "state_dict") else repr(schedule)
        out["schedule"] = repr(state)
    return out


def _differences(mine: Mapping[str, Any], ref: Mapping[str, Any]) -> list[str]:
    return [k for k in sorted(set(mine) | set(ref)) if mine.get(k) != ref.get(k)]


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_consistent(optimizer: Any, schedule: Any = None, *, group: Any = None) -> None:
    """Raise :class:`DistributedMismatchError` on every rank unless all ranks have the same
    :func:`fingerprint`. A no-op outside an initialised process group of 2+ ranks."""
    if not _dist_active(group):
        return
    dist = torch.distributed
    mine = fingerprint(optimizer, schedule)
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, mine, group=group)
    problems = []
    for r, theirs in enumerate(gathered[1:], start=1):
        for key in _differences(theirs, gathered[0]):
            problems.append(f"rank {r} has {key}={_short(theirs.get(key))} but rank 0 has "
                            f"{_short(gathered[0].get(key))}")
    if problems:
        raise DistributedMismatchError("ranks disagree on the optimizer setup: "
                                       + "; ".join(problems))


def _code(text: str) -> int:
    return zlib.crc32(text.encode())


class StepGuard:
    """A step pre-hook that keeps ranks in lock-step.

    At the first step it runs :func:`check_consistent`; at every ``every``-th step it
    all-gathers (what drives the step, how many gradients are present, the optimizer's step
    count) and raises :class:`DistributedMismatchError` on every rank if they differ: a rank
    stepping another objective, or a rank whose gradients are missing.

    Args:
        optimizer: a :class:`~moopt.MultiObjectiveOptimizer`.
        schedule: optional schedule whose state is part of the first-step fingerprint.
        every: check every ``every``-th step (1 = every step).
        group: process group (default: the world).
    """

    def __init__(self, optimizer: Any, schedule: Any = None, *, every: int = 1,
                 group: Any = None) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        self.optimizer = optimizer
        self.schedule = schedule
        self.every = every
        self.group = group
        self.calls = 0
        self.checked_steps = 0
        self._names = {_code(n): n for n in optimizer.objectives}
        self._handle = optimizer.register_step_pre_hook(self._hook)

    def remove(self) -> None:
        """Stop checking."""
        self._handle.remove()

    def optimizer_step(self) -> int:
        """How many steps the optimizer has taken: the step counter ``T`` of the first
        parameter with state (restored by ``load_state_dict``, so a rank that resumed and one
        that did not disagree even when both made the same number of calls)."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state.get(p)
                if state and "T" in state:
                    return int(state["T"])
        return 0

    def _signature(self, objective: str | None, step: int) -> tuple[str, list[int]]:
        joint = getattr(self.optimizer, "_joint_grads", {})
        if joint:
            label = "joint:" + ",".join(sorted(joint))
            present = sum(len(g) for g in joint.values())
        else:
            if objective is None and len(self.optimizer.objectives) == 1:
                objective = self.optimizer.objectives[0]
            label = str(objective)
            present = sum(p.grad is not None for g in self.optimizer.param_groups
                          for p in g["params"])
        self._names.setdefault(_code(label), label)
        skipped = int(getattr(self.optimizer, "skipped_steps", 0))
        return label, [_code(label), present, step, skipped]

    def _hook(self, optimizer: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        objective = kwargs.get("objective")
        calls, self.calls = self.calls, self.calls + 1
        if not _dist_active(self.group):
            self.checked_steps += 1
            return
        if calls == 0:
            check_consistent(optimizer, self.schedule, group=self.group)
        if calls % self.every:
            return
        self.checked_steps += 1
        self.check_step(objective, self.optimizer_step())

    def check_step(self, objective: str | None, step: int) -> None:
        """Gather this step's signature (``step`` = the optimizer's step count before the
        step about to be taken, see :meth:`optimizer_step`) from every rank; raise if any
        differs."""
        dist = torch.distributed
        _, values = self._signature(objective, step)
        world = dist.get_world_size(self.group)
        mine = torch.tensor(values, dtype=torch.int64)
        backend = dist.get_backend(self.group)
        if backend == "nccl":
            mine = mine.cuda()
        out = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(out, mine, group=self.group)
        rows = [t.cpu().tolist() for t in out]
        if all(row == rows[0] for row in rows):
            return
        desc = []
        for r, (code, present, step, skipped) in enumerate(rows):
            name = self._names.get(code, f"<unknown objective, crc {code}>")
            desc.append(f"rank {r}: step {step + 1} driven by {name!r} with {present} "
                        f"gradients ({skipped} skipped before)")
        raise DistributedMismatchError(
            "ranks disagree on this optimizer step (" + "; ".join(desc) + "). Every rank must "
            "step the same objective from the same schedule, with gradients for the same "
            "parameters")


# ------------------------------------------------------ sharded checkpoints
FORMAT = 1
_WRAPPERS = ("module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")


def _world_size() -> int:
    return torch.distributed.get_world_size() if _dist_active() else 1


def clean_name(name: str) -> str:
    """A parameter name without wrapper prefixes (DDP ``module.``, ``torch.compile``...)."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPERS)


def param_names(optimizer: Any, model: torch.nn.Module | None) -> dict[int, str]:
    """``id(param) -> name`` for every optimizer parameter: the model's (cleaned) parameter
    names, or ``"param_groups.<g>.<i>"`` without a model."""
    params = [(gi, i, p) for gi, g in enumerate(optimizer.param_groups)
              for i, p in enumerate(g["params"])]
    if model is None:
        return {id(p): f"param_groups.{gi}.{i}" for gi, i, p in params}
    by_id = {id(p): clean_name(n) for n, p in model.named_parameters()}
    missing = [f"group {gi} index {i} shape {tuple(p.shape)}" for gi, i, p in params
               if id(p) not in by_id]
    if missing:
        raise ValueError(f"optimizer parameters not found in the model: {missing[:5]}; pass "
                         "the model whose parameters the optimizer steps")
    return {id(p): by_id[id(p)] for _, _, p in params}


def _shard_count(p: Tensor) -> int:
    mesh = p.device_mesh
    count = 1
    for dim, placement in enumerate(p.placements):
        if placement.is_shard():
            count *= mesh.size(dim)
    return count


def _wrap_like(value: Tensor, p: Tensor) -> Tensor:
    from torch.distributed.tensor import DTensor

    view = value.view(local(p).shape)
    return DTensor.from_local(view, p.device_mesh, p.placements, run_check=False,
                              shape=p.shape, stride=p.stride())


def _wrap_per_shard(value: Tensor, p: Tensor, length: int) -> Tensor:
    """A per-rank 1-D tensor, zero-padded to ``length``, as a DTensor with one row per shard."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    padded = torch.zeros(length, dtype=value.dtype, device=value.device)
    padded[: value.numel()] = value.reshape(-1)
    placements = [Shard(0) if pl.is_shard() else Replicate() for pl in p.placements]
    return DTensor.from_local(padded, p.device_mesh, placements, run_check=False,
                              shape=(_shard_count(p) * length,), stride=(1,))


def _layout(states: Mapping[str, tuple[Tensor, Mapping[str, Any]]]) -> dict[str, int]:
    """The per-shard state parts of DTensor parameters and their length, maxed over ranks.

    A plain state tensor of a DTensor parameter with one value per local element on every
    rank (bf16 buffers, 8-bit codes) is elementwise and reshards like its parameter; any
    other (8-bit block scales) is per-shard. The decision is taken over all ranks, and
    every rank must hold the same state keys.
    """
    mine = {}
    for name, (p, state) in states.items():
        if not is_distributed(p):
            continue
        for key, value in state.items():
            if isinstance(value, Tensor) and not is_distributed(value):
                mine[f"{name}:{key}"] = (value.numel() == local(p).numel(), value.numel())
    gathered: list[Any] = [mine]
    if _dist_active():
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, mine)
    for r, theirs in enumerate(gathered):
        if set(theirs) != set(gathered[0]):
            diff = sorted(set(theirs) ^ set(gathered[0]))
            raise StateMismatchError(
                f"optimizer state keys differ between rank {r} and rank 0 (e.g. {diff[:3]}): "
                "a storage backend decided per local shard (8-bit min_size?); the state "
                "cannot be checkpointed consistently")
    return {k: max(g[k][1] for g in gathered) for k in mine
            if not all(g[k][0] for g in gathered)}


def _dcp_view(p: Tensor, state: Mapping[str, Any], name: str,
              layout: Mapping[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor) or not is_distributed(p) or is_distributed(value):
            out[key] = value
        elif f"{name}:{key}" in layout:
            out[key] = _wrap_per_shard(value, p, layout[f"{name}:{key}"])
        else:
            out[key] = _wrap_like(value, p)
    return out


def _meta(optimizer: Any, names: Mapping[int, str], layout: Mapping[str, int]) -> dict:
    groups = []
    for g in optimizer.param_groups:
        hyper = {k: v for k, v in g.items() if k != "params"}
        groups.append({"hyper": hyper, "params": [names[id(p)] for p in g["params"]]})
    return {**optimizer._meta(), "moopt_checkpoint": FORMAT, "world_size": _world_size(),
            "per_shard": dict(layout), "param_groups": groups,
            "state_names": [names[id(p)] for p in optimizer.state]}


def optimizer_state_dict(optimizer: Any, model: torch.nn.Module | None = None) -> dict:
    """The optimizer's state in a form ``torch.distributed.checkpoint`` saves correctly:
    ``{"state": {param name: {key: value}}, "meta_json": str}``."""
    names = param_names(optimizer, model)
    states = {names[id(p)]: (p, st) for p, st in optimizer.state.items()}
    layout = _layout(states)
    state = {name: _dcp_view(p, st, name, layout) for name, (p, st) in states.items()}
    meta = _meta(optimizer, names, layout)
    return {"state": state, "meta_json": json.dumps(meta, default=_json_default)}


def _json_default(value: Any) -> Any:
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"optimizer param_group value {value!r} cannot be saved in a checkpoint")


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns when one process saves or loads alone; here that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to (save|load)")
        yield


def _model_state(model: torch.nn.Module) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model)


MANIFEST_NAME = "moopt-manifest.json"
_DCP_METADATA = ".metadata"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, optimizer: Any, *,
                    extra: Mapping[str, Any] | None = None) -> None:
    """Save model + optimizer (+ a JSON-serialisable ``extra``, e.g. the schedule's state) to
    the directory ``path`` with DCP, then its manifest. Call it on every rank."""
    import torch.distributed.checkpoint as dcp

    text = json.dumps(dict(extra or {}))
    sd = {"model": _model_state(model), "optim": optimizer_state_dict(optimizer, model),
          "extra_json": text}
    with _quiet_single_process():
        dcp.save(sd, checkpoint_id=str(Path(path)))
    _write_manifest(Path(path))


def _write_manifest(path: Path) -> None:
    """Every rank hashes the shard files it wrote (``__<rank>_*``); rank 0 adds DCP's
    metadata and writes the manifest; nobody returns before it exists."""
    from moopt.integrity import describe_files
    from moopt.runner.atomic import write_json_atomic

    mine = describe_files(path, [p.name for p in path.glob(f"__{rank()}_*") if p.is_file()])
    files: dict[str, Any] = {}
    for part in gather_object(mine):
        files.update(part)
    if is_main_process():
        files.update(describe_files(path, [_DCP_METADATA]))
        write_json_atomic(path / MANIFEST_NAME,
                          {"format": 1, "world_size": world_size(), "files": files})
    barrier()


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check a directory written by :func:`save_checkpoint` against its manifest; every
    rank checks the metadata and its share of the shard files, and a problem found by any
    rank raises :class:`~moopt.integrity.CheckpointError` on every rank. Returns the
    manifest."""
    from moopt.integrity import CheckpointError, check_entry

    path = Path(path)
    manifest: dict[str, Any] = {}
    problem = None
    try:
        manifest = _read_manifest(path)
        files = manifest["files"]
        check_entry(path / _DCP_METADATA, files[_DCP_METADATA])
        shards = sorted(n for n in files if n != _DCP_METADATA)
        for name in shards[rank()::world_size()]:
            check_entry(path / name, files[name])
    except CheckpointError as err:
        problem = str(err)
    found = [p for p in gather_object(problem) if p]
    if found:
        raise CheckpointError(found[0])
    return manifest


def _read_manifest(path: Path) -> dict[str, Any]:
    from moopt.integrity import CheckpointError

    where = path / MANIFEST_NAME
    if not where.is_file():
        what = "is not a directory" if not path.is_dir() else "has no manifest"
        raise CheckpointError(f"{where}: missing: {str(path)!r} {what} (it was not written by "
                              "moopt.distributed.save_checkpoint, or not completely); it is "
                              "not read")
    try:
        manifest = json.loads(where.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{where}: damaged: {err}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or _DCP_METADATA not in files or \
            any(Path(n).name != n for n in files):
        raise CheckpointError(f"{where}: damaged: no valid file list")
    return manifest


def _reader(path: str) -> Any:
    """A DCP storage reader whose metadata was unpickled here, with the allow-list of
    :func:`moopt.safe_load.loads_dcp_metadata` (before DCP starts, so a refusal is one
    plain error)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    from moopt.safe_load import loads_dcp_metadata

    source = Path(path) / _DCP_METADATA
    metadata = loads_dcp_metadata(source.read_bytes(), source)

    class TrustedReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return TrustedReader(path)


def _read_meta(path: str) -> tuple[dict, dict]:
    import torch.distributed.checkpoint as dcp

    probe: dict[str, Any] = {"optim": {"meta_json": ""}, "extra_json": ""}
    with _quiet_single_process():
        dcp.load(probe, storage_reader=_reader(path))
    return json.loads(probe["optim"]["meta_json"]), json.loads(probe["extra_json"])


def _check_meta(meta: Mapping[str, Any], optimizer: Any, names: Mapping[int, str]) -> None:
    if meta.get("moopt_checkpoint") != FORMAT:
        raise StateMismatchError(f"not a moopt checkpoint of format {FORMAT} "
                                 f"(found {meta.get('moopt_checkpoint')!r})")
    optimizer.check_meta(meta, "checkpoint")
    saved_groups = meta["param_groups"]
    if len(saved_groups) != len(optimizer.param_groups):
        raise StateMismatchError(f"checkpoint has {len(saved_groups)} param groups, this "
                                 f"optimizer has {len(optimizer.param_groups)}")
    for gi, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        here = [names[id(p)] for p in group["params"]]
        if saved["params"] != here:
            raise StateMismatchError(f"param group {gi}: checkpoint holds parameters "
                                     f"{saved['params'][:4]}..., this optimizer "
                                     f"{here[:4]}...")
    if meta["per_shard"] and meta["world_size"] != _world_size():
        some = sorted(meta["per_shard"])[:3]
        raise StateMismatchError(
            f"checkpoint was saved by {meta['world_size']} ranks with per-shard optimizer state "
            f"({some}: 8-bit block scales are cut per shard); it can only be loaded by "
            f"{meta['world_size']} ranks with the same sharding, not {_world_size()}")


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: Any) -> dict[str, Any]:
    """Load what :func:`save_checkpoint` saved; returns its ``extra``. Call it on every rank.

    The files are checked against the manifest first (:func:`verify_checkpoint`), then the
    optimizer's objectives, policy, storage and parameter names (a mismatch raises
    :class:`~moopt.errors.StateMismatchError` on every rank and changes nothing). The
    optimizer state is read into fresh buffers and swapped in at the end; the model's
    parameters are loaded in place (DCP's usual way)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    path = str(Path(path))
    names = param_names(optimizer, model)
    verify_checkpoint(path)
    meta, extra = _read_meta(path)
    _check_meta(meta, optimizer, names)
    by_name = {names[id(p)]: p for g in optimizer.param_groups for p in g["params"]}
    fresh: dict[Tensor, dict[str, Any]] = {}
    for name in meta["state_names"]:
        p = by_name[name]
        fresh[p] = fmt.new_state(p, optimizer._specs, optimizer.objectives, optimizer.storage)
    states = {names[id(p)]: (p, st) for p, st in fresh.items()}
    layout = _layout(states)
    if layout != meta["per_shard"]:
        raise StateMismatchError("per-shard optimizer state differs from the checkpoint's "
                                 "(different sharding of the parameters?)")
    views = {name: _dcp_view(p, st, name, layout) for name, (p, st) in states.items()}
    sd = {"model": _model_state(model), "optim": {"state": views}}
    with _quiet_single_process():
        dcp.load(sd, storage_reader=_reader(path))
    for name, (_, state) in states.items():
        for key, value in views[name].items():
            if not isinstance(value, Tensor):
                state[key] = value  # counters come back as loaded objects
            elif value is not state[key]:
                loaded = local(value)
                target = state[key].reshape(-1)
                target.copy_(loaded.reshape(-1)[: target.numel()])  # unpads per-shard parts
    set_model_state_dict(model, sd["model"])
    for saved, group in zip(meta["param_groups"], optimizer.param_groups):
        for key, value in saved["hyper"].items():
            group[key] = tuple(value) if key in ("betas", "base_betas") else value
    optimizer.state.clear()
    optimizer.state.update(fresh)
    optimizer.skipped_steps = int(meta.get("skipped_steps", 0))
    optimizer._joint_grads.clear()
    return extra
