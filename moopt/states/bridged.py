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
updates). The formulas are also in docs/concepts.md.

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

The guard is one piece: :func:`guard_settings` / :func:`guard_coefficients` (host) and
:func:`guarded_direction` (tensors); the native kernel's copy is ``guarded_direction`` in
``fast/native.c``.

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

from moopt.states.adam import ema, moment_coefficients
from moopt.states.policy import BufferSpec, SharingPolicy, StepInfo, register_policy

# Storage coarser than this (bf16, int8) cannot resolve a cancelled v_k^ + v_b^: bridged
# directions are clipped to LOSSY_STEP_BOUND there instead of floored at its rounding.
LOSSY_ROUNDOFF = 2.0**-20
# Largest bridged direction (in units of the objective's learning rate) with lossy storage.
LOSSY_STEP_BOUND = 3.0


# ---------------------------------------------------------------- the cancellation guard
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


def guard_coefficients(info: StepInfo) -> dict[str, float]:
    """The guard's coefficients of one step: ``guard_u`` (the floor) and ``bound``."""
    floor, bound = guard_settings(info.guard, info.unit_roundoff, info.dtype)
    return {"guard_u": floor, "bound": bound}


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
