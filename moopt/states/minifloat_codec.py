"""The minifloat maps' 8-bit codec by integer arithmetic, in torch ops (no table lookups).

A minifloat map (:func:`moopt.states.quantization.minifloat_map`) holds zero and the ``n``
consecutive float32 patterns with ``M`` mantissa bits that end at 1.0 (``n = 127`` with both
signs for signed buffers, ``n = 255`` for unsigned ones). So a code and its entry's pattern
are a shift apart, and the nearest entry of a quotient ``q`` follows from ``q``'s pattern:
with ``P`` the pattern of ``min(|q|, 1)`` (as integers: NaN and inf patterns clamp to 1.0,
like the table), ``s = 1`` for negative ``q``, ``S = 23 - M`` and ``o`` the pattern index of
the entry below the smallest one (``(pattern(1.0) >> S) - n``)::

    t     = P + 2^(S-1) - 1 + s - (o << S)      (half a step minus one: ties go to the
                                                 lower entry, which is the larger magnitude
                                                 for negative values)
    index = max(t >> S, 1) if t > pattern(v1 / 2) + 2^(S-1) - 1 - (o << S) else 0
    code  = 127 + index or 127 - index (signed), index or 0 for negative q (unsigned)

and decoding is ``pattern = (|code - 127| + o) << S`` (or ``(code + o) << S``), zero for
index 0, with the sign of ``code - 127``. Between two neighbouring entries a value is nearer
the one its pattern rounds to, which is why rounding the pattern finds the nearest entry.
The native kernels (``native.c`` ``minifloat16``) compute the same codes; tests hold both to
the table codec on every float32 pattern of [-1, 1]. Written in integer torch ops, the
codec vectorises under ``torch.compile`` (C++ on CPUs, Triton on GPUs) where the table
codec's lookups do not.

Example:
    >>> import torch
    >>> from moopt.states.minifloat_codec import minifloat_codes, minifloat_entries
    >>> codes = minifloat_codes(torch.tensor([-1.0, -0.3, 0.0, 0.26, 1.0]), True, 3)
    >>> minifloat_entries(codes, True, 3)
    tensor([-1.0000, -0.3125,  0.0000,  0.2500,  1.0000])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from moopt.states.quantization import (
    BlockCodec,
    QuantMap,
    decode_blocks_with,
    encode_blocks_with,
)

ONE = 0x3F800000  # float32 pattern of 1.0


def _layout(signed: bool, mantissa_bits: int) -> tuple[int, int]:
    """(shift S, pattern index o of the entry below the smallest) of a minifloat map."""
    shift = 23 - mantissa_bits
    count = 127 if signed else 255
    return shift, (ONE >> shift) - count


def minifloat_codes(q: Tensor, signed: bool, mantissa_bits: int) -> Tensor:
    """uint8 codes of the entries nearest to the float32 quotients ``q`` (ties to the lower
    entry), by arithmetic on their patterns (module docstring)."""
    shift, offset = _layout(signed, mantissa_bits)
    bias = (1 << (shift - 1)) - 1 - (offset << shift)
    half = ((1 + offset) << shift) - (1 << 23)  # the pattern of v1 / 2
    bits = q.contiguous().view(torch.int32)
    negative = bits < 0
    t = torch.clamp_max(bits & 0x7FFFFFFF, ONE) + bias + negative.to(torch.int32)
    index = torch.where(t > half + bias, torch.clamp_min(t >> shift, 1), 0)
    if signed:
        code = torch.where(negative, 127 - index, 127 + index)
    else:
        code = torch.where(negative, 0, index)
    return code.to(torch.uint8)


def minifloat_entries(codes: Tensor, signed: bool, mantissa_bits: int) -> Tensor:
    """The float32 map entries of uint8 ``codes``."""
    shift, offset = _layout(signed, mantissa_bits)
    c = codes.to(torch.int32)
    d = c - 127 if signed else c
    index = d.abs()
    bits = ((index + offset) << shift) | (d & -0x80000000)  # the sign of d
    return torch.where(index == 0, 0, bits).view(torch.float32)


class MinifloatCodec(BlockCodec):
    """:class:`~moopt.states.quantization.BlockCodec` for a minifloat map, encoding and
    decoding by arithmetic (:func:`minifloat_codes`, :func:`minifloat_entries`): the same
    parts and codes as the table codec, with no lookups for ``torch.compile`` to gather."""

    def __init__(self, qmap: QuantMap, block_size: int) -> None:
        if qmap.minifloat is None:
            raise ValueError(f"map {qmap.name!r} is not a minifloat map")
        super().__init__(qmap, block_size)
        self.signed, self.mantissa_bits = qmap.minifloat

    @property
    def key(self) -> tuple:
        return ("minifloat", self.block_size, self.signed, self.mantissa_bits)

    def constants(self, device: torch.device) -> tuple[Tensor, ...]:
        return ()

    def decode(self, parts: Sequence[Tensor], constants: Sequence[Tensor], dtype: torch.dtype,
               numel: int) -> Tensor:
        codes, absmax = parts
        entries = minifloat_entries(codes.reshape(-1), self.signed, self.mantissa_bits)
        return decode_blocks_with(entries, absmax, self.block_size).to(dtype)

    def encode(self, value: Tensor, constants: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return encode_blocks_with(
            value.float(), self.block_size,
            lambda q: minifloat_codes(q, self.signed, self.mantissa_bits))


__all__ = ["MinifloatCodec", "minifloat_codes", "minifloat_entries"]
