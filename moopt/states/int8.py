"""8-bit block-wise storage (``storage="int8"``): one byte per value plus a float32 scale
per block of 256 values, i.e. ``1 + 4/256`` bytes per value (docs/storage.md).

Signed buffers (first moments, the bridged residual ``v_k``) use the signed dynamic map,
true second moments the unsigned one (:mod:`moopt.states.quantization`). Small tensors
(fewer than ``min_size`` values: biases, norms) stay float32, where 8 bits would save
little memory and cost accuracy. Each read dequantizes to float32; each write re-quantizes
with exact round-to-nearest. A distributed (DTensor) parameter's state is quantized per
local shard.

Example:
    >>> import torch
    >>> from moopt.states.int8 import Int8Storage
    >>> backend = Int8Storage(block_size=256)
    >>> p = torch.zeros(8192)
    >>> parts = backend.allocate(p, signed=True)
    >>> sorted((k, v.dtype, tuple(v.shape)) for k, v in parts.items())
    [('absmax', torch.float32, (32,)), ('codes', torch.uint8, (8192,))]
    >>> value = torch.linspace(-1, 1, 8192)
    >>> backend.write(parts, value, signed=True)
    >>> bool((backend.read(parts, p, signed=True) - value).abs().max() <= 0.0071)
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from moopt.base.errors import StateMismatchError
from moopt.states.fast import native
from moopt.states.quantization import (
    BlockCodec,
    QuantMap,
    dequantize_blockwise,
    get_map,
    num_blocks,
    quantize_blockwise,
)
from moopt.states.storage import (
    PLAIN,
    Codec,
    Parts,
    StorageBackend,
    compute_dtype,
    register_storage,
)
from moopt.states.tensors import like, local


def _native_ok(codes: Tensor, absmax: Tensor) -> bool:
    """Whether the native codec (same bits as the torch one) can take these parts."""
    return (codes.device.type == "cpu" and absmax.device.type == "cpu"
            and absmax.dtype == torch.float32 and codes.is_contiguous()
            and absmax.is_contiguous())


@register_storage("int8")
class Int8Storage(StorageBackend):
    """Block-wise dynamic 8-bit storage.

    Args:
        block_size: values per block sharing one float32 absmax (default 256).
        min_size: tensors with fewer values stay in full precision (default 4096; 0 quantizes
            everything).
    """

    name = "int8"
    aliases = False
    bits = 8

    def __init__(self, block_size: int = 256, min_size: int = 4096) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"{self.name} storage: block_size must be a positive int, got "
                             f"{block_size!r}")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise ValueError(f"{self.name} storage: min_size must be a non-negative int, got "
                             f"{min_size!r}")
        self.block_size = block_size
        self.min_size = min_size

    def config(self) -> dict:
        return {"block_size": self.block_size, "min_size": self.min_size}

    def qmap(self, signed: bool) -> QuantMap:
        return get_map(signed=signed, total_bits=self.bits)

    def quantizes(self, param: Tensor) -> bool:
        """Whether a buffer shaped like ``param`` is stored in 8 bits (else full precision).

        Decided on the global size (a DTensor's ``numel`` is the whole parameter's) so that
        every rank of a sharded parameter picks the same layout; blocks are cut per shard."""
        return param.numel() >= max(self.min_size, 1)

    def allocate(self, param: Tensor, *, signed: bool) -> Parts:
        shard = local(param)
        if not self.quantizes(param):
            return {"": torch.zeros(shard.shape, dtype=compute_dtype(param), device=shard.device)}
        n = shard.numel()
        # Zero scales decode every code to 0, so the codes' initial value does not matter.
        return {
            "codes": torch.zeros(n, dtype=torch.uint8, device=shard.device),
            "absmax": torch.zeros(num_blocks(n, self.block_size), dtype=torch.float32,
                                  device=shard.device),
        }

    def codec(self, param: Tensor, *, signed: bool) -> Codec:
        return BlockCodec(self.qmap(signed), self.block_size) if self.quantizes(param) else PLAIN

    def _check(self, parts: Parts, n: int) -> None:
        if "codes" not in parts or "absmax" not in parts:
            raise StateMismatchError(
                f"{self.name} storage expects parts 'codes' and 'absmax' for a buffer of {n} "
                f"values, got parts {sorted(parts)} (state saved with another backend or "
                "min_size?)")
        codes, absmax = parts["codes"], parts["absmax"]
        nb = num_blocks(n, self.block_size)
        if codes.dtype != torch.uint8 or codes.numel() != n or absmax.numel() != nb:
            raise StateMismatchError(
                f"{self.name} storage (block_size={self.block_size}) expects {n} uint8 codes and "
                f"{nb} scales, got {codes.numel()} {codes.dtype} codes and {absmax.numel()} "
                "scales")

    def read(self, parts: Parts, param: Tensor, *, signed: bool) -> Tensor:
        shard = local(param)
        if not self.quantizes(param):
            if "" not in parts:
                raise StateMismatchError(
                    f"{self.name} storage keeps a buffer of {shard.numel()} values (< min_size="
                    f"{self.min_size}) in full precision, got parts {sorted(parts)}")
            return like(parts[""], param)
        self._check(parts, shard.numel())
        codes, absmax = parts["codes"], parts["absmax"]
        lib = native.library()
        if lib is not None and _native_ok(codes, absmax):
            flat = native.decode(lib, codes, absmax, self.qmap(signed), self.block_size,
                                 torch.empty(codes.numel(), dtype=torch.float32))
        else:
            flat = dequantize_blockwise(codes, absmax, self.qmap(signed), self.block_size)
        return like(flat.view(shard.shape).to(compute_dtype(param)), param)

    def write(self, parts: Parts, value: Tensor, *, signed: bool) -> None:
        value = local(value)
        if "" in parts:
            if value is not parts[""]:
                parts[""].copy_(value)
            return
        self._check(parts, value.numel())
        codes, absmax = parts["codes"], parts["absmax"]
        lib = native.library()
        if (lib is not None and _native_ok(codes, absmax) and value.device.type == "cpu"
                and value.dtype == torch.float32 and value.is_contiguous()
                and native.encode(lib, value, codes, absmax, self.qmap(signed),
                                  self.block_size)):
            return
        quantize_blockwise(value, self.qmap(signed), self.block_size, codes=codes,
                           absmax=absmax)

    def unit_roundoff(self, param: Tensor, *, signed: bool | None = None) -> float:
        """The largest rounding error of one stored value relative to its block's absmax.

        That is the relative error of the values that dominate a block (8-bit signed map:
        0.0070, unsigned: 0.0035; the larger one unless ``signed`` is given). Values far
        below their block's maximum carry larger relative errors (about 7% at a tenth of the
        maximum); tensors kept in full precision report float32's ``2**-24``.
        """
        if not self.quantizes(param):
            return float(torch.finfo(compute_dtype(param)).eps) / 2
        kinds = (True, False) if signed is None else (signed,)
        return max(self.qmap(s).max_abs_error() for s in kinds)
