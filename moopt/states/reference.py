"""The reference path: one parameter at a time, every buffer read and written through its
storage backend, the policy's rule (:mod:`moopt.states.rule`) applied eagerly in the compute
dtype (float32, or float64 for float64 parameters: float64-exact).

It takes anything the optimizer takes (any device, dtype, storage backend, DTensor shards)
and is what ``fast_path=False`` selects; the fused paths are held equal to it.

Example (the first Adam step of a parameter moves it by lr):
    >>> import torch
    >>> from moopt.state_format import new_state
    >>> from moopt.states.policy import StepInfo, get_policy
    >>> from moopt.states.reference import ParamStep, reference_step
    >>> from moopt.states.rule import Rule
    >>> from moopt.states.storage import resolve_storage
    >>> policy = get_policy("shared")
    >>> storage = resolve_storage("fp32", policy.roles())
    >>> p = torch.zeros(2)
    >>> state = new_state(p, policy.buffer_specs(), ("a",), storage)
    >>> info = StepInfo(T=1, t=1, objective="a", betas=(0.9, 0.95), base_betas=(0.9, 0.95),
    ...                 eps=1e-8, guard=8.0, unit_roundoff=2**-24)
    >>> rule = Rule.of(policy, 1)
    >>> s = rule.scalars(("a",), [1.0], [0.1], 0.0, lambda k: info)
    >>> reference_step(rule, ParamStep(p, [torch.ones(2)], ("a",), s, state), storage)
    >>> p
    tensor([-0.1000, -0.1000])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from moopt.states.layout import gather_parts
from moopt.states.rule import Rule
from moopt.states.storage import StorageBackend, compute_dtype
from moopt.states.tensors import local


@dataclass
class ParamStep:
    """One parameter's step: its gradients (one per objective taking part, in the order of
    ``objectives``), the scalar vector (:meth:`Rule.scalars`) and its state dict."""

    param: Tensor
    grads: list[Tensor]
    objectives: tuple[str, ...]
    scalars: tuple[float, ...]
    state: dict[str, Any]


# The rule is elementwise: large tensors go through it in pieces of this many values, so
# that its temporaries stay in the cache (the same operations on every value).
PIECE = 1 << 16


def reference_step(rule: Rule, step: ParamStep, storage: Mapping[str, StorageBackend]) -> None:
    """Apply ``rule`` to one parameter through its storage backends (read, rule, write)."""
    p = step.param
    cdt = compute_dtype(p)
    target = local(p.detach())
    slots = rule.slots(step.objectives)
    parts = [gather_parts(step.state, spec.key(k)) for spec, k in slots]
    values = [local(storage[spec.role].read(part, p, signed=spec.signed)).reshape(-1)
              for (spec, _), part in zip(slots, parts)]
    grads = [local(g).to(cdt).reshape(-1) for g in step.grads]
    s = torch.tensor(step.scalars, dtype=cdt, device=target.device).unbind(0)
    work = target.to(cdt).reshape(-1)
    moved = torch.empty_like(work)
    new: list[Tensor | None] = []
    for start in range(0, work.numel(), PIECE):
        piece = slice(start, start + PIECE)
        update, fresh = rule.apply([g[piece] for g in grads], [v[piece] for v in values], s)
        moved[piece] = work[piece] * s[0] - update
        if start == 0:  # the rule returns the same buffers for every piece
            new = [None if x is None else torch.empty_like(work) for x in fresh]
        for out, x in zip(new, fresh):
            if out is not None:
                out[piece] = x
    target.copy_(moved.view(target.shape))
    for (spec, _), part, value in zip(slots, parts, new):
        if value is not None:
            storage[spec.role].write(part, value.view(target.shape), signed=spec.signed)
