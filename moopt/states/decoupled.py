"""The ``decoupled`` policy (DualOptim): one independent Adam state per objective.

A step of objective k reads and writes only k's moments, bias-corrected by k's own counter.

Example:
    >>> import torch, moopt
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = moopt.MultiObjectiveOptimizer([p], objectives=["a", "b"], policy="decoupled",
    ...                                     lr=0.1)
    >>> p.grad = torch.ones(2); opt.step(objective="a")
    >>> p.grad = -torch.ones(2); opt.step(objective="b")   # b's state is fresh: full step
    >>> p.detach()
    tensor([1., 1.])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from moopt.states.policy import (
    BufferSpec,
    BufferView,
    GroupBatch,
    SharingPolicy,
    StepContext,
    builtin_fast_step,
    register_policy,
)
from moopt.states.shared import adam_direction, ema_


@register_policy("decoupled")
class DecoupledPolicy(SharingPolicy):
    """Per-objective (m_k, v_k); the step of k uses k's counter t_k."""

    buffers = (
        BufferSpec("m", per_objective=True, signed=True, role="delta"),
        BufferSpec("v", per_objective=True, signed=False, role="delta"),
    )

    def alternating(self, param: Tensor, grad: Tensor, state: BufferView,
                    ctx: StepContext) -> None:
        ema_(state["m"], state["v"], grad, ctx.betas)
        direction = adam_direction(state["m"], state["v"], ctx.t_k, ctx.betas, ctx.eps)
        param.sub_(direction, alpha=ctx.lr)

    def joint(self, param: Tensor, grads: Mapping[str, Tensor], state: BufferView,
              ctx: StepContext) -> None:
        update = torch.zeros_like(param)
        for k, g in grads.items():
            m, v = state.of("m", k), state.of("v", k)
            ema_(m, v, g, ctx.betas)
            update.add_(adam_direction(m, v, ctx.t[k], ctx.betas, ctx.eps),
                        alpha=ctx.weights[k] * ctx.lrs[k])
        param.sub_(update)

    def fast_step(self, batch: GroupBatch) -> bool:
        return builtin_fast_step(self, DecoupledPolicy, "decoupled", batch)
