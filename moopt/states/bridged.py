"""The ``bridged`` policy (DualOptim+): a shared base state plus per-objective deltas.

The base (m_b, v_b) sees every gradient; objective k's delta (m_k, v_k) tracks k's residual
against the base. The step uses ``(m_k^ + m_b^) / (sqrt(|v_k^ + v_b^|) + eps)``, so the
optimizer acts like one shared Adam when objectives agree and like separate ones when they
conflict. Rules: docs/concepts.md (alternating and joint).

Cancellation guard
------------------
``v_k^ + v_b^`` is a small positive number computed as the sum of two large terms of
opposite sign when one objective's gradients dwarf another's. Each term carries a relative
rounding error of about ``u`` (the unit roundoff of its storage: 2^-24 for fp32, far more for
bf16 and int8), so any sum smaller than ``u * (|v_k^| + |v_b^|)`` is noise. The denominator
therefore uses ``max(|v_k^ + v_b^|, guard * u * (|v_k^| + |v_b^|))``: the floor never binds
unless the sum is within ``guard`` rounding errors of zero (in float64 it changes nothing
beyond ~1e-15 relative), and there it bounds the step by what the stored precision can
resolve. ``bridge_guard=0`` disables it and reproduces the unguarded formula.

With lossy storage (bf16, int8: unit roundoff above 2^-20) both moments of a quiet
coordinate can be rounded to zero, leaving ``eps`` alone in the denominator; there (and only
there, unless ``bridge_guard=0``) each objective's direction is also clipped to the exact-Adam
bound of :func:`moopt.states.shared.adam_step_bound` at its counter t_k.

Example:
    >>> import torch, moopt
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = moopt.MultiObjectiveOptimizer([p], objectives=["a", "b"], policy="bridged", lr=0.1)
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
from moopt.states.shared import BOUND_SLACK, adam_step_bound

# Storage coarser than this (bf16, int8) can round both moments of a coordinate to zero,
# leaving only eps in the denominator: there bridged directions are clipped to the Adam bound.
LOSSY_ROUNDOFF = 2.0**-20


def base_read(m_b: Tensor, v_b: Tensor, T: int,
              base_betas: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """The base moments bias-corrected by T - 1 (the base has not yet seen this gradient)."""
    if T == 1:
        return m_b.clone(), v_b.clone()
    b3, b4 = base_betas
    return m_b / (1 - b3 ** (T - 1)), v_b / (1 - b4 ** (T - 1))


def guarded_denominator(vk_hat: Tensor, vb_hat: Tensor, eps: float, guard: float,
                        unit_roundoff: float) -> Tensor:
    """``sqrt(max(|vk^ + vb^|, guard * u * (|vk^| + |vb^|))) + eps``."""
    total = (vk_hat + vb_hat).abs_()
    if guard > 0:
        floor = vk_hat.abs().add_(vb_hat.abs()).mul_(guard * unit_roundoff)
        total = torch.maximum(total, floor)
    return total.sqrt_().add_(eps)


def delta_direction(grad: Tensor, m_k: Tensor, v_k: Tensor, mb_hat: Tensor, vb_hat: Tensor,
                    t_k: int, ctx: StepContext) -> Tensor:
    """Steps 3-5 for one objective: update its delta, return its (unscaled) direction."""
    b1, b2 = ctx.betas
    m_k.mul_(b1).add_(grad - mb_hat, alpha=1 - b1)
    v_k.mul_(b2).add_(grad * grad - vb_hat, alpha=1 - b2)
    mk_hat = m_k / (1 - b1**t_k)
    vk_hat = v_k / (1 - b2**t_k)
    denom = guarded_denominator(vk_hat, vb_hat, ctx.eps, ctx.guard, ctx.unit_roundoff)
    direction = mk_hat.add_(mb_hat).div_(denom)
    if ctx.guard > 0 and ctx.unit_roundoff > LOSSY_ROUNDOFF:
        bound = adam_step_bound(t_k, ctx.betas) * BOUND_SLACK
        if math.isfinite(bound):
            direction.clamp_(-bound, bound)
    return direction


@register_policy("bridged")
class BridgedPolicy(SharingPolicy):
    """Shared base (m_b, v_b) + per-objective residual deltas (m_k, v_k): 2 + 2N buffers."""

    buffers = (
        BufferSpec("m_base", per_objective=False, signed=True, role="base"),
        BufferSpec("v_base", per_objective=False, signed=False, role="base"),
        BufferSpec("m", per_objective=True, signed=True, role="delta"),
        # v_k tracks g^2 minus the base's second moment: it can be negative.
        BufferSpec("v", per_objective=True, signed=True, role="delta"),
    )

    def alternating(self, param: Tensor, grad: Tensor, state: BufferView,
                    ctx: StepContext) -> None:
        m_b, v_b = state["m_base"], state["v_base"]
        mb_hat, vb_hat = base_read(m_b, v_b, ctx.T, ctx.base_betas)
        direction = delta_direction(grad, state["m"], state["v"], mb_hat, vb_hat, ctx.t_k, ctx)
        param.sub_(direction, alpha=ctx.lr)
        b3, b4 = ctx.base_betas
        m_b.mul_(b3).add_(grad, alpha=1 - b3)
        v_b.mul_(b4).addcmul_(grad, grad, value=1 - b4)

    def joint(self, param: Tensor, grads: Mapping[str, Tensor], state: BufferView,
              ctx: StepContext) -> None:
        m_b, v_b = state["m_base"], state["v_base"]
        mb_hat, vb_hat = base_read(m_b, v_b, ctx.T, ctx.base_betas)
        update = torch.zeros_like(param)
        mean_g = torch.zeros_like(param)
        mean_g2 = torch.zeros_like(param)
        for k, g in grads.items():
            a_k = ctx.weights[k]
            direction = delta_direction(g, state.of("m", k), state.of("v", k), mb_hat, vb_hat,
                                        ctx.t[k], ctx)
            update.add_(direction, alpha=a_k * ctx.lrs[k])
            mean_g.add_(g, alpha=a_k)
            mean_g2.addcmul_(g, g, value=a_k)
        param.sub_(update)
        b3, b4 = ctx.base_betas
        m_b.mul_(b3).add_(mean_g, alpha=1 - b3)
        v_b.mul_(b4).add_(mean_g2, alpha=1 - b4)

    def fast_step(self, batch: GroupBatch) -> bool:
        return builtin_fast_step(self, BridgedPolicy, "bridged", batch)
