"""Adam math shared by the built-in policies: moving-average coefficients, bias corrections,
the exact-Adam step bound, and the bias-corrected direction in torch ops.

Coefficients are computed on the host in float64 (``1 - beta``, ``1 / (1 - beta^t)``) and
rounded once to the compute dtype by the caller; the tensor functions only multiply by them.
Computing ``1 - beta`` in float32 from a float32-rounded beta would put a relative error of
about 1e-5 on the second moment for beta = 0.999.

Example:
    >>> import torch
    >>> from moopt.states.adam import adam_coefficients, adam_direction, ema
    >>> c = adam_coefficients((0.9, 0.999), step=1, eps=1e-8)
    >>> round(c["a2"], 12), round(c["c2"], 9)
    (0.001, 1000.0)
    >>> g = torch.tensor([2.0], dtype=torch.float64)
    >>> m = ema(torch.zeros(1, dtype=torch.float64), g, c["b1"], c["a1"])
    >>> v = ema(torch.zeros(1, dtype=torch.float64), g * g, c["b2"], c["a2"])
    >>> float(adam_direction(m, v, c["c1"], c["c2"], c["eps"], c["bound"]))
    0.999999995
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from moopt.states.policy import BufferSpec

# Slack on the bound so that rounding in float32 never makes the clip bind by itself.
BOUND_SLACK = 1.0 + 1e-4


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


def direction_bound(step: int, betas: tuple[float, float]) -> float:
    """:func:`adam_step_bound` with its slack: the clip applied to Adam-like directions."""
    bound = adam_step_bound(step, betas) * BOUND_SLACK
    return bound if math.isfinite(bound) else math.inf


def adam_moments(*, per_objective: bool, role: str) -> tuple[BufferSpec, BufferSpec]:
    """Adam's two buffers: the signed first moment ``m`` and the second moment ``v``."""
    return (BufferSpec("m", per_objective=per_objective, signed=True, role=role),
            BufferSpec("v", per_objective=per_objective, signed=False, role=role))


def moment_coefficients(betas: tuple[float, float], step: int) -> dict[str, float]:
    """``b1, a1 = 1 - b1, b2, a2 = 1 - b2`` and the bias corrections ``c1 = 1 / (1 - b1^t)``,
    ``c2 = 1 / (1 - b2^t)`` for counter ``step``, in float64."""
    b1, b2 = (float(b) for b in betas)
    return {"b1": b1, "a1": 1.0 - b1, "b2": b2, "a2": 1.0 - b2,
            "c1": 1.0 / (1.0 - b1**step), "c2": 1.0 / (1.0 - b2**step)}


def adam_coefficients(betas: tuple[float, float], step: int, eps: float) -> dict[str, float]:
    """Everything an Adam step with counter ``step`` multiplies by: the moment coefficients,
    ``eps`` and the direction's clip ``bound`` (:func:`direction_bound`)."""
    return {**moment_coefficients(betas, step), "eps": float(eps),
            "bound": direction_bound(step, betas)}


def ema(old: Tensor, new: Tensor, beta: Tensor | float, one_minus_beta: Tensor | float) -> Tensor:
    """The moving average ``old * beta + new * (1 - beta)`` with both factors given."""
    return old * beta + new * one_minus_beta


def adam_direction(m: Tensor, v: Tensor, c1: Tensor | float, c2: Tensor | float,
                   eps: Tensor | float, bound: Tensor | float) -> Tensor:
    """Bias-corrected ``m^ / (sqrt(v^) + eps)``, clipped to ``[-bound, bound]`` (a no-op for
    an exactly stored state, see :func:`adam_step_bound`)."""
    return torch.clamp((m * c1) / ((v * c2).sqrt() + eps), -bound, bound)


def adam_update(grad: Tensor, state, coef) -> tuple[Tensor, dict[str, Tensor]]:
    """One Adam step of the moments ``state.m``, ``state.v`` (a policy's ``update`` body for
    the coefficients of :func:`adam_coefficients`)."""
    m = ema(state.m, grad, coef.b1, coef.a1)
    v = ema(state.v, grad * grad, coef.b2, coef.a2)
    return adam_direction(m, v, coef.c1, coef.c2, coef.eps, coef.bound), {"m": m, "v": v}
