"""The ``shared`` policy: one Adam state for every objective (the plain-Adam baseline).

With N = 1 this is exactly ``torch.optim.AdamW``.

Example:
    >>> import torch, moopt
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = moopt.MultiObjectiveOptimizer([p], objectives=["a", "b"], policy="shared", lr=0.1)
    >>> p.grad = torch.ones(2); opt.step(objective="a")
    >>> p.detach()
    tensor([0.9000, 0.9000])
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


def adam_direction(m: Tensor, v: Tensor, step: int, betas: tuple[float, float],
                   eps: float) -> Tensor:
    """Bias-corrected Adam direction ``m^ / (sqrt(v^) + eps)`` for a counter ``step``."""
    b1, b2 = betas
    denom = (v / (1 - b2**step)).sqrt_().add_(eps)
    return (m / (1 - b1**step)).div_(denom)


def ema_(m: Tensor, v: Tensor, grad: Tensor, betas: tuple[float, float]) -> None:
    """First and second moment moving averages, in place."""
    b1, b2 = betas
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)


@register_policy("shared")
class SharedPolicy(SharingPolicy):
    """One (m, v) pair for all objectives, counted by the total step counter T."""

    buffers = (
        BufferSpec("m", per_objective=False, signed=True, role="shared"),
        BufferSpec("v", per_objective=False, signed=False, role="shared"),
    )

    def alternating(self, param: Tensor, grad: Tensor, state: BufferView,
                    ctx: StepContext) -> None:
        ema_(state["m"], state["v"], grad, ctx.betas)
        param.sub_(adam_direction(state["m"], state["v"], ctx.T, ctx.betas, ctx.eps), alpha=ctx.lr)

    def joint(self, param: Tensor, grads: Mapping[str, Tensor], state: BufferView,
              ctx: StepContext) -> None:
        # One gradient, the weighted mean; one step with the weighted learning rate.
        grad = torch.zeros_like(param)
        for k, g in grads.items():
            grad.add_(g, alpha=ctx.weights[k])
        lr = sum(ctx.weights[k] * ctx.lrs[k] for k in grads)
        ema_(state["m"], state["v"], grad, ctx.betas)
        param.sub_(adam_direction(state["m"], state["v"], ctx.T, ctx.betas, ctx.eps), alpha=lr)

    def fast_step(self, batch: GroupBatch) -> bool:
        return builtin_fast_step(self, SharedPolicy, "shared", batch)
