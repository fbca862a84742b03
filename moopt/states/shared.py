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

import math
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


def adam_step_bound(step: int, betas: tuple[float, float]) -> float:
    """The largest ``|m^| / sqrt(v^)`` an exact Adam state can hold after ``step`` updates.

    By Cauchy-Schwarz on the two moving averages (r = b1^2 / b2):
    ``|m^| / sqrt(v^) <= (1-b1)/(1-b1^t) * sqrt(S_t * (1-b2^t) / (1-b2))`` with
    ``S_t = sum_{j<t} r^j``. It equals 1 at t = 1 and tends to
    ``(1-b1) / sqrt((1-b2)(1-r))`` (1.165 for betas 0.9, 0.95). Clipping directions to it
    changes nothing in exact arithmetic, and stops the blow-up when lossy storage (8-bit,
    bf16) rounds a small second moment to zero while its first moment survives.
    """
    b1, b2 = betas
    if b2 == 0.0:
        return math.inf
    r = b1 * b1 / b2
    s_t = float(step) if r == 1.0 else (1 - r**step) / (1 - r)
    return (1 - b1) / (1 - b1**step) * math.sqrt(s_t * (1 - b2**step) / (1 - b2))


# Slack on the bound so that rounding in float32 never makes the clip bind by itself.
BOUND_SLACK = 1.0 + 1e-4


def adam_direction(m: Tensor, v: Tensor, step: int, betas: tuple[float, float],
                   eps: float) -> Tensor:
    """Bias-corrected Adam direction ``m^ / (sqrt(v^) + eps)`` for a counter ``step``,
    clipped to :func:`adam_step_bound` (a no-op for an exactly stored state)."""
    b1, b2 = betas
    denom = (v / (1 - b2**step)).sqrt_().add_(eps)
    direction = (m / (1 - b1**step)).div_(denom)
    bound = adam_step_bound(step, betas) * BOUND_SLACK
    return direction.clamp_(-bound, bound) if math.isfinite(bound) else direction


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
