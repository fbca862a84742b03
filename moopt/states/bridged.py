"""The ``bridged`` policy (DualOptim+): a shared base state plus per-objective deltas.

The base (m_b, v_b) sees every gradient; objective k's delta (m_k, v_k) tracks k's residual
against the base. A step of objective k (T and t_k already counted):

    mb^ = m_b / (1 - b3^(T-1)),  vb^ = v_b / (1 - b4^(T-1))      (mb^ = m_b, vb^ = v_b at T = 1)
    m_k <- b1 m_k + (1 - b1) (g - mb^) ;  v_k <- b2 v_k + (1 - b2) (g^2 - vb^)
    mk^ = m_k / (1 - b1^t_k),  vk^ = v_k / (1 - b2^t_k)
    theta <- theta - lr_k (mk^ + mb^) / (sqrt(|vk^ + vb^|) + eps)      (with the guard below)
    m_b <- b3 m_b + (1 - b3) g ;  v_b <- b4 v_b + (1 - b4) g^2

so the optimizer acts like one shared Adam when objectives agree and like separate ones when
they conflict. Joint mode (``joint_mode = "average"``): every objective's delta step reads
the same base; the parameter moves by ``sum_k a_k lr_k direction_k`` and the base is fed
``sum_k a_k g_k`` and ``sum_k a_k g_k^2`` (the a_k-weighted mean of the objectives' base
updates).

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
bound of :func:`moopt.states.adam.adam_step_bound` at its counter t_k.

The guard is one piece: :func:`guard_coefficients` (host) and :func:`guarded_direction`
(tensors); the native kernel's copy is ``guarded_direction`` in ``fast/native.c``.

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

import torch
from torch import Tensor

from moopt.states.adam import direction_bound, ema, moment_coefficients
from moopt.states.policy import BufferSpec, SharingPolicy, StepInfo, register_policy

# Storage coarser than this (bf16, int8) can round both moments of a coordinate to zero,
# leaving only eps in the denominator: there bridged directions are clipped to the Adam bound.
LOSSY_ROUNDOFF = 2.0**-20


# ---------------------------------------------------------------- the cancellation guard
def guard_coefficients(info: StepInfo) -> dict[str, float]:
    """``guard_u = guard * u`` (the floor's factor) and the direction's clip ``bound`` (the
    Adam bound at t_k with lossy storage and the guard on, else inf)."""
    lossy = info.guard > 0 and info.unit_roundoff > LOSSY_ROUNDOFF
    return {"guard_u": info.guard * info.unit_roundoff,
            "bound": direction_bound(info.t, info.betas) if lossy else math.inf}


def guarded_direction(mk_hat: Tensor, vk_hat: Tensor, mb_hat: Tensor, vb_hat: Tensor,
                      eps: Tensor | float, guard_u: Tensor | float,
                      bound: Tensor | float) -> Tensor:
    """``(mk^ + mb^) / (sqrt(max(|vk^ + vb^|, guard_u (|vk^| + |vb^|))) + eps)``, clipped to
    ``[-bound, bound]``. ``guard_u = 0`` and ``bound = inf`` give the unguarded formula."""
    total = (vk_hat + vb_hat).abs()
    floor = (vk_hat.abs() + vb_hat.abs()) * guard_u
    denom = torch.maximum(total, floor).sqrt() + eps
    return torch.clamp((mk_hat + mb_hat) / denom, -bound, bound)


# ------------------------------------------------------------------------- the policy
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

    def coefficients(self, info: StepInfo) -> dict[str, float]:
        b3, b4 = (float(b) for b in info.base_betas)
        seen = info.T - 1  # the base has not yet seen this gradient
        return {
            **moment_coefficients(info.betas, info.t),
            "b3": b3, "a3": 1.0 - b3, "b4": b4, "a4": 1.0 - b4,
            "cb1": 1.0 / (1.0 - b3**seen) if seen > 0 else 1.0,
            "cb2": 1.0 / (1.0 - b4**seen) if seen > 0 else 1.0,
            "eps": float(info.eps),
            **guard_coefficients(info),
        }

    def update(self, grad, state, coef):
        mb_hat, vb_hat = state.m_base * coef.cb1, state.v_base * coef.cb2
        g2 = grad * grad
        m = ema(state.m, grad - mb_hat, coef.b1, coef.a1)
        v = ema(state.v, g2 - vb_hat, coef.b2, coef.a2)
        direction = guarded_direction(m * coef.c1, v * coef.c2, mb_hat, vb_hat, coef.eps,
                                      coef.guard_u, coef.bound)
        return direction, {"m": m, "v": v, "m_base": ema(state.m_base, grad, coef.b3, coef.a3),
                           "v_base": ema(state.v_base, g2, coef.b4, coef.a4)}
