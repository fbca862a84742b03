"""8-bit block-wise minifloat storage (``storage="fp8"``): one byte per value plus a float32
scale per block of 256 values, i.e. ``1 + 4/256`` bytes per value, like ``int8``.

Same blocks and scales as ``int8``; only the code book differs. Each value is stored as the
nearest entry of a "minifloat" map of ``x / absmax``
(:func:`moopt.states.quantization.minifloat_map`): signed buffers use 127 magnitudes
``2^e * (1 + k/8)`` from 1.25 * 2^-16 to 1 with both signs (an E4M3-like float), true
second moments 255 magnitudes from 1.25 * 2^-32 to 1 (E5M3-like). Every stored value is
within 1/16 of itself (relative) down to the smallest entry, where ``int8``'s dynamic map is
finer near the block maximum (0.7%) and much coarser below a tenth of it (7% and more). The
native CPU kernels encode it with integer arithmetic on the float32 pattern instead of a
table lookup, which makes an 8-bit step cheaper on CPUs with slow gathers
(docs/storage.md, docs/benchmarks.md).

Example:
    >>> import torch
    >>> from moopt.states.fp8 import Fp8Storage
    >>> backend = Fp8Storage()
    >>> parts = backend.allocate(torch.zeros(8192), signed=True)
    >>> value = torch.linspace(-1, 1, 8192)
    >>> backend.write(parts, value, signed=True)
    >>> bool((backend.read(parts, value, signed=True) - value).abs().max() <= 1 / 32)
    True
"""

from __future__ import annotations

from torch import Tensor

from moopt.states.int8 import Int8Storage
from moopt.states.minifloat_codec import MinifloatCodec
from moopt.states.quantization import QuantMap, get_minifloat_map
from moopt.states.storage import PLAIN, Codec, register_storage


@register_storage("fp8")
class Fp8Storage(Int8Storage):
    """Block-wise 8-bit minifloat storage.

    Args:
        block_size, min_size: as for :class:`~moopt.states.int8.Int8Storage` (defaults 256
            and 4096).
        mantissa_bits: mantissa bits ``M`` of the map (default 3). Each extra bit halves the
            relative error (``2^-(M+1)``) and the range: the signed map spans about
            ``127 / 2^M`` binades below the block maximum, the unsigned one twice that. With
            4 bits (8 / 16 binades for signed / unsigned buffers instead of 16 / 32) the
            regression toys of ``benchmarks/quality.py`` end inside fp32's band, but blocks
            whose values span many decades lose their small values (docs/storage.md).

    Example:
        >>> import torch
        >>> from moopt.states.fp8 import Fp8Storage
        >>> finer = Fp8Storage(mantissa_bits=4)
        >>> finer.qmap(signed=True).max_abs_error() < Fp8Storage().qmap(signed=True).max_abs_error()
        True
    """

    name = "fp8"

    def __init__(self, block_size: int = 256, min_size: int = 4096,
                 mantissa_bits: int = 3) -> None:
        super().__init__(block_size, min_size)
        if isinstance(mantissa_bits, bool) or not isinstance(mantissa_bits, int):
            raise ValueError(f"{self.name} storage: mantissa_bits must be an int, got "
                             f"{mantissa_bits!r}")
        try:  # both maps must exist (too many mantissa bits leave no exponent range)
            for signed in (True, False):
                get_minifloat_map(signed=signed, mantissa_bits=mantissa_bits)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{self.name} storage: mantissa_bits={mantissa_bits!r} is not "
                             f"usable: {err}") from None
        self.mantissa_bits = mantissa_bits

    def config(self) -> dict:
        return {**super().config(), "mantissa_bits": self.mantissa_bits}

    def qmap(self, signed: bool) -> QuantMap:
        return get_minifloat_map(signed=signed, mantissa_bits=self.mantissa_bits)

    def codec(self, param: Tensor, *, signed: bool) -> Codec:
        # Arithmetic instead of table lookups: same codes, and torch.compile vectorises it.
        if not self.quantizes(param):
            return PLAIN
        return MinifloatCodec(self.qmap(signed), self.block_size)
