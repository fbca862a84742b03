"""The ``bridged`` policy (DualOptim+): a shared base state plus per-objective deltas.

The base (m_b, v_b) sees every gradient; objective k's delta (m_k, v_k) tracks k's residual
against the base. The step uses ``(m_k^ + m_b^) / (sqrt(|v_k^ + v_b^|) + eps)``, so the
optimizer acts like one shared Adam when objectives agree and like separate ones when they
conflict. Rules: docs/concepts.md (alternating and joint).

Cancellation guard
------------------
``v_k^ + v_b^`` is a small positive number computed as the sum of two large terms of
opposite sign when one objective's gradients dwarf another's. The guard has two parts:

* A floor for the arithmetic. Each term carries a relative rounding error of about ``u``,
  so a sum below ``u * (|v_k^| + |v_b^|)`` is noise. The denominator uses
  ``max(|v_k^ + v_b^|, guard * u * (|v_k^| + |v_b^|))``: the floor binds only where the sum
  is within ``guard`` rounding errors of zero (in float64 it changes nothing beyond ~1e-15
  relative). ``u`` is the storage's unit roundoff (2^-24 for fp32, 2^-53 for float64 state)
  where that is at most 2^-20, else the compute dtype's (2^-24).
* A step bound for lossy storage (bf16, int8: unit roundoff above 2^-20). Their stored
  moments carry errors of 0.4% to several % of the terms (8 bits: relative to the block's
  largest value), so a sum that has cancelled that far cannot be resolved; a floor at that
  level would bind on many steps of a conflicting stream and shrink all of them
  (docs/benchmarks.md, "Fidelity"). Instead each objective's direction
  ``(m_k^ + m_b^) / (sqrt(.) + eps)`` is clipped to ``LOSSY_STEP_BOUND`` (3, in units of
  its learning rate). Exact directions beyond it are rare (0.2-1.9% of the steps of the
  benchmark's streams) and arise almost only where the sum has cancelled (where it kept a
  fifth of ``|v_k^| + |v_b^|`` the largest was 2.5-3.1); there exact arithmetic steps up to
  hundreds of learning rates, which low-bit state cannot reproduce.

``bridge_guard=0`` disables both and reproduces the unguarded formula.

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

# Storage coarser than this (bf16, int8) cannot resolve a cancelled v_k^ + v_b^: bridged
# directions are clipped to LOSSY_STEP_BOUND there instead of floored at its rounding.
LOSSY_ROUNDOFF = 2.0**-20
# Largest bridged direction (in units of the objective's learning rate) with lossy storage.
LOSSY_STEP_BOUND = 3.0


def base_read(m_b: Tensor, v_b: Tensor, T: int,
              base_betas: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """The base moments bias-corrected by T - 1 (the base has not yet seen this gradient)."""
    if T == 1:
        return m_b.clone(), v_b.clone()
    b3, b4 = base_betas
    return m_b / (1 - b3 ** (T - 1)), v_b / (1 - b4 ** (T - 1))


def guard_settings(guard: float, unit_roundoff: float,
                   compute_dtype: torch.dtype) -> tuple[float, float]:
    """``(floor, bound)`` of the cancellation guard: the coefficient of
    ``|v_k^| + |v_b^|`` under which ``|v_k^ + v_b^|`` is floored, and the largest absolute
    direction (``inf``: no clip). ``unit_roundoff`` is the storage's; see the module
    docstring for the rule."""
    if guard <= 0:
        return 0.0, math.inf
    if unit_roundoff > LOSSY_ROUNDOFF:
        return guard * float(torch.finfo(compute_dtype).eps) / 2, LOSSY_STEP_BOUND
    return guard * unit_roundoff, math.inf


def guarded_denominator(vk_hat: Tensor, vb_hat: Tensor, eps: float, floor: float) -> Tensor:
    """``sqrt(max(|vk^ + vb^|, floor * (|vk^| + |vb^|))) + eps``."""
    total = (vk_hat + vb_hat).abs_()
    if floor > 0:
        total = torch.maximum(total, vk_hat.abs().add_(vb_hat.abs()).mul_(floor))
    return total.sqrt_().add_(eps)


def delta_direction(grad: Tensor, m_k: Tensor, v_k: Tensor, mb_hat: Tensor, vb_hat: Tensor,
                    t_k: int, ctx: StepContext) -> Tensor:
    """Steps 3-5 for one objective: update its delta, return its (unscaled) direction."""
    b1, b2 = ctx.betas
    m_k.mul_(b1).add_(grad - mb_hat, alpha=1 - b1)
    v_k.mul_(b2).add_(grad * grad - vb_hat, alpha=1 - b2)
    mk_hat = m_k / (1 - b1**t_k)
    vk_hat = v_k / (1 - b2**t_k)
    floor, bound = guard_settings(ctx.guard, ctx.unit_roundoff, vk_hat.dtype)
    direction = mk_hat.add_(mb_hat).div_(guarded_denominator(vk_hat, vb_hat, ctx.eps, floor))
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
