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

from moopt.states.int8 import Int8Storage
from moopt.states.quantization import QuantMap, get_minifloat_map
from moopt.states.storage import register_storage


@register_storage("fp8")
class Fp8Storage(Int8Storage):
    """Block-wise 8-bit minifloat storage (3 mantissa bits).

    Args:
        block_size: values per block sharing one float32 absmax (default 256).
        min_size: tensors with fewer values stay in full precision (default 4096; 0 quantizes
            everything).
    """

    name = "fp8"
    mantissa_bits = 3

    def qmap(self, signed: bool) -> QuantMap:
        return get_minifloat_map(signed=signed, mantissa_bits=self.mantissa_bits)
