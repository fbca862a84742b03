"""Finding NaN and infinity in parameters and optimizer state, cheaply and on every rank.

The optimizer's default ``nonfinite="ignore"`` (like ``torch.optim``) lets an infinite
gradient turn parameters and state into NaN without a word, even when the loss was finite.
The training loop therefore checks the parameters after every step (one fused 2-norm per
device and dtype and one host sync; small next to a forward and backward pass) and the
parameters and optimizer state before every checkpoint, so a checkpoint never holds
NaN or infinity and the error names the step that produced it.

Under ``torch.distributed`` each rank checks its own tensors (the local shards of FSDP2)
and :func:`any_rank` makes every rank take the same decision.

Example:
    >>> import torch
    >>> from moopt.runner.finite import first_nonfinite
    >>> first_nonfinite([("w", torch.ones(3)), ("b", torch.tensor([1.0, float("nan")]))])
    'b'
    >>> first_nonfinite([("w", torch.full((2,), 3e38))]) is None  # 2-norm overflows; exact
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor


def _local(t: Tensor) -> Tensor:
    return t.to_local() if hasattr(t, "device_mesh") and hasattr(t, "to_local") else t


def first_nonfinite(named: Iterable[tuple[str, Tensor]]) -> str | None:
    """The name of the first floating-point tensor that holds NaN or infinity, else
    ``None``. One fused norm and one host sync when everything is finite."""
    items = [(name, _local(t).detach()) for name, t in named]
    items = [(n, t) for n, t in items if t.is_floating_point() or t.is_complex()]
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for _, t in items:
        if t.numel():
            groups.setdefault((t.device, t.dtype), []).append(t)
    flags = [torch.stack(torch._foreach_norm(ts, 2)).isfinite().all() for ts in groups.values()]
    if not flags or bool(torch.stack([f.cpu() for f in flags]).all()):
        return None
    # Some norm is not finite: find the tensor (an overflowing sum of squares is no alarm).
    for name, t in items:
        if t.numel() and not bool(t.isfinite().all()):
            return name
    return None


def param_names(model: torch.nn.Module, optimizer: Any) -> dict[int, str]:
    """``id(param) -> name`` for the optimizer's parameters (the model's names, else
    ``param_groups.<g>.<i>``)."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {id(p): by_id.get(id(p), f"param_groups.{gi}.{i}")
            for gi, g in enumerate(optimizer.param_groups) for i, p in enumerate(g["params"])}


def parameters(model: torch.nn.Module, optimizer: Any) -> Iterator[tuple[str, Tensor]]:
    """``(name, parameter)`` of every parameter the optimizer steps."""
    names = param_names(model, optimizer)
    for g in optimizer.param_groups:
        for p in g["params"]:
            yield f"parameter {names[id(p)]!r}", p


def optimizer_state(model: torch.nn.Module, optimizer: Any) -> Iterator[tuple[str, Tensor]]:
    """``(description, tensor)`` of every tensor in the optimizer's state."""
    names = param_names(model, optimizer)
    for p, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                yield f"optimizer state {key!r} of {names.get(id(p), '?')!r}", value


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any rank (``flag`` outside a
    distributed job)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
