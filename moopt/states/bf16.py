"""bfloat16 storage (``storage="bf16"``): 2 bytes per value, math in float32.

Round-to-nearest-even by default. With ``stochastic_rounding=True`` a write rounds up or
down at random with probabilities that make the stored value unbiased (E[stored] = value):
small EMA updates then accumulate on average instead of being rounded away. The random bits
come from torch's global generator (``torch.manual_seed`` makes runs repeatable).

Example:
    >>> import torch
    >>> from moopt.states.storage import get_storage
    >>> backend = get_storage("bf16")
    >>> p = torch.zeros(3)
    >>> parts = backend.allocate(p, signed=True)
    >>> backend.write(parts, torch.tensor([1.0, -2.0, 1.0 + 2**-10]), signed=True)
    >>> parts[""].dtype, backend.read(parts, p, signed=True)
    (torch.bfloat16, tensor([ 1., -2.,  1.]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from moopt.base.errors import StateMismatchError
from moopt.states.storage import (
    PLAIN,
    Codec,
    Parts,
    StorageBackend,
    compute_dtype,
    register_storage,
)
from moopt.states.tensors import like, local

_HIGH_HALF = -65536  # int32 0xFFFF0000: keeps sign, exponent and bfloat16's 7 mantissa bits


def stochastic_round_bf16(value: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``value`` rounded to bfloat16, up or down with probability given by the distance.

    Adds uniform random 16 low bits to the float32 pattern and truncates them: the magnitude
    rounds up exactly when the carry happens, with probability (dropped bits) / 2^16.
    Non-finite values round to nearest.
    """
    x = value.float().contiguous()
    noise = torch.randint(0, 1 << 16, x.shape, dtype=torch.int32, device=x.device,
                          generator=generator)
    rounded = (x.view(torch.int32) + noise).bitwise_and_(_HIGH_HALF).view(torch.float32)
    return torch.where(torch.isfinite(x), rounded, x).to(torch.bfloat16)


@register_storage("bf16")
class BF16Storage(StorageBackend):
    """bfloat16 buffers; optional stochastic rounding on write."""

    name = "bf16"
    aliases = False

    def __init__(self, stochastic_rounding: bool = False) -> None:
        if not isinstance(stochastic_rounding, bool):
            raise ValueError(f"bf16 storage: stochastic_rounding must be True or False, got "
                             f"{stochastic_rounding!r}")
        self.stochastic_rounding = stochastic_rounding

    def config(self) -> dict:
        return {"stochastic_rounding": self.stochastic_rounding}

    def allocate(self, param: Tensor, *, signed: bool) -> Parts:
        shard = local(param)
        return {"": torch.zeros(shard.shape, dtype=torch.bfloat16, device=shard.device)}

    def codec(self, param: Tensor, *, signed: bool) -> Codec | None:
        """A plain codec (the copy into the bfloat16 part rounds to nearest even); none with
        stochastic rounding, whose random bits come from torch's global generator in the order
        of the reference path's writes."""
        return None if self.stochastic_rounding else PLAIN

    def _stored(self, parts: Parts) -> Tensor:
        stored = parts.get("")
        if stored is None or stored.dtype != torch.bfloat16:
            got = sorted(parts) if stored is None else stored.dtype
            raise StateMismatchError(f"bf16 storage expects one bfloat16 tensor, got {got}")
        return stored

    def read(self, parts: Parts, param: Tensor, *, signed: bool) -> Tensor:
        return like(self._stored(parts).to(compute_dtype(param)), param)

    def write(self, parts: Parts, value: Tensor, *, signed: bool) -> None:
        stored = self._stored(parts)
        value = local(value)
        if self.stochastic_rounding:
            stored.copy_(stochastic_round_bf16(value))
        else:
            stored.copy_(value)

    def unit_roundoff(self, param: Tensor) -> float:
        """2^-8 (half of bfloat16's 2^-7 spacing); a full spacing with stochastic rounding."""
        return 2.0**-7 if self.stochastic_rounding else 2.0**-8
