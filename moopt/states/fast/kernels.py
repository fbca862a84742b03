"""Per-tensor update kernels of the built-in policies, written once for eager and compiled use.

A kernel takes the flat parameter, its flat gradient, the policy's state buffers (1-tuples
of float32 or bfloat16 tensors), their kinds, and a 1-D tensor of step scalars (so that
changing bias corrections never trigger a recompile). It computes in the parameter's compute
dtype and writes everything back in place. Under ``torch.compile`` one call becomes one
fused loop that reads and writes each state byte once.

8-bit states are dequantized before and re-quantized after the kernel by the eager
vectorised code of :mod:`moopt.states.quantization`: fusing the table lookups into the
compiled loop was measured 5-20x slower on CPU (inductor's indirect loads), see
docs/benchmarks.md.

The math follows docs/concepts.md and matches the reference path operation by operation
(tests/states/test_fast_*.py hold them equal).

Example:
    >>> import torch
    >>> from moopt.states.fast.kernels import shared_kernel, adam_scalar_values
    >>> p, g = torch.zeros(4), torch.ones(4)
    >>> m, v = torch.zeros(4), torch.zeros(4)
    >>> s = torch.tensor(adam_scalar_values(decay=1.0, lr=0.1, betas=(0.9, 0.95), step=1,
    ...                                     eps=1e-8))
    >>> shared_kernel(p, g, (m,), (v,), ("plain", "plain"), s)
    >>> p
    tensor([-0.1000, -0.1000, -0.1000, -0.1000])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def load(buf: tuple[Tensor, ...], kind: str, dtype: torch.dtype) -> Tensor:
    """A buffer (a float32 or bfloat16 tensor) in the compute ``dtype``."""
    return buf[0].to(dtype)


def store(buf: tuple[Tensor, ...], kind: str, value: Tensor) -> None:
    """Write ``value`` into a buffer (rounding to nearest for bfloat16)."""
    buf[0].copy_(value)


def adam_scalar_values(*, decay: float, lr: float, betas: tuple[float, float], step: int,
                       eps: float, bound: float = math.inf) -> list[float]:
    """Scalars of shared / decoupled kernels: decay, lr, b1, b2, 1/(1-b1^t), 1/(1-b2^t), eps,
    and the clip bound of the direction (inf: no clip)."""
    b1, b2 = betas
    return [decay, lr, b1, b2, 1 / (1 - b1**step), 1 / (1 - b2**step), eps, bound]


def shared_kernel(p: Tensor, g: Tensor, m: tuple[Tensor, ...], v: tuple[Tensor, ...],
                  kinds: tuple[str, str], s: Tensor) -> None:
    """One Adam step (shared, or decoupled with the objective's own buffers and counter)."""
    decay, lr, b1, b2, c1, c2, eps, bound = s.unbind(0)
    dt = s.dtype
    grad = g.to(dt)
    m_new = load(m, kinds[0], dt) * b1 + grad * (1 - b1)
    v_new = load(v, kinds[1], dt) * b2 + grad * grad * (1 - b2)
    denom = (v_new * c2).sqrt() + eps
    direction = torch.clamp((m_new * c1) / denom, -bound, bound)
    p.copy_(p.to(dt) * decay - lr * direction)
    store(m, kinds[0], m_new)
    store(v, kinds[1], v_new)


def bridged_scalar_values(*, decay: float, lr: float, betas: tuple[float, float],
                          base_betas: tuple[float, float], T: int, t_k: int, eps: float,
                          guard_u: float, bound: float = math.inf) -> list[float]:
    """Scalars of the bridged kernel (base bias corrections use T - 1; 1 when T = 1; the
    direction's clip bound last, inf for none)."""
    b1, b2 = betas
    b3, b4 = base_betas
    cb1 = 1 / (1 - b3 ** (T - 1)) if T > 1 else 1.0
    cb2 = 1 / (1 - b4 ** (T - 1)) if T > 1 else 1.0
    return [decay, lr, b1, b2, b3, b4, cb1, cb2, 1 / (1 - b1**t_k), 1 / (1 - b2**t_k), eps,
            guard_u, bound]


def bridged_kernel(p: Tensor, g: Tensor, m_b: tuple[Tensor, ...], v_b: tuple[Tensor, ...],
                   m_k: tuple[Tensor, ...], v_k: tuple[Tensor, ...],
                   kinds: tuple[str, str, str, str], s: Tensor) -> None:
    """One bridged (DualOptim+) step of one objective, with the cancellation guard."""
    decay, lr, b1, b2, b3, b4, cb1, cb2, c1, c2, eps, guard_u, bound = s.unbind(0)
    dt = s.dtype
    grad = g.to(dt)
    g2 = grad * grad
    mb = load(m_b, kinds[0], dt)
    vb = load(v_b, kinds[1], dt)
    mb_hat, vb_hat = mb * cb1, vb * cb2
    mk_new = load(m_k, kinds[2], dt) * b1 + (grad - mb_hat) * (1 - b1)
    vk_new = load(v_k, kinds[3], dt) * b2 + (g2 - vb_hat) * (1 - b2)
    mk_hat, vk_hat = mk_new * c1, vk_new * c2
    total = (vk_hat + vb_hat).abs()
    floor = (vk_hat.abs() + vb_hat.abs()) * guard_u  # guard_u = 0 leaves total unchanged
    denom = torch.maximum(total, floor).sqrt() + eps
    direction = torch.clamp((mk_hat + mb_hat) / denom, -bound, bound)
    p.copy_(p.to(dt) * decay - lr * direction)
    store(m_k, kinds[2], mk_new)
    store(v_k, kinds[3], vk_new)
    store(m_b, kinds[0], mb * b3 + grad * (1 - b3))
    store(v_b, kinds[1], vb * b4 + g2 * (1 - b4))
