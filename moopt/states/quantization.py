"""Block-wise dynamic quantization in pure PyTorch (Dettmers et al., ICLR 2022).

A tensor is flattened and cut into blocks of ``block_size`` elements. Each block keeps its
absolute maximum (float32) and one code per element: the index of the entry of a sorted
"dynamic" map of [-1, 1] (signed) or [0, 1] (unsigned) nearest to ``x / absmax`` (taken as
``x`` times the rounded reciprocal of ``absmax``, see :func:`block_quotients`).

The dynamic map (Dettmers, "8-Bit Approximations for Parallelism in Deep Learning", 2016):
a code is a sign bit (signed maps only), then a run of ``E`` zero bits giving the decimal
exponent ``10^-E``, then an indicator bit 1, then the remaining bits as a linear fraction:
the midpoint of one of ``2^bits`` equal cells of [0.1, 1]. The all-zero code is 0, and the
otherwise unused "negative zero" (signed) or "exponent past the last" (unsigned) code is 1.0.

Encoding is exact round-to-nearest of the float32 quotient (``x`` times the rounded
reciprocal of ``absmax``, see :func:`block_quotients`) without a search over the map: the
top 16 bits of its float32 pattern (sign, exponent, 7 mantissa bits) index a table giving the
nearest code at the low end of that narrow interval and the one map midpoint (if any) that
falls inside it; one comparison finishes the job. All vectorised, no Python loop over blocks.

Example:
    >>> import torch
    >>> from moopt.states.quantization import get_map, quantize_blockwise, dequantize_blockwise
    >>> qmap = get_map(signed=True)
    >>> x = torch.linspace(-3, 3, 1000)
    >>> codes, absmax = quantize_blockwise(x, qmap, block_size=256)
    >>> codes.dtype, codes.shape, absmax.shape
    (torch.uint8, torch.Size([1000]), torch.Size([4]))
    >>> y = dequantize_blockwise(codes, absmax, qmap, block_size=256)
    >>> bool((y - x).abs().max() < 0.03)
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from moopt.states.storage import Codec


def dynamic_map(signed: bool = True, total_bits: int = 8) -> Tensor:
    """The sorted ``2**total_bits`` entries of the dynamic map, as float32.

    Built code by code from the bit layout described in the module docstring.
    """
    if not isinstance(total_bits, int) or not 2 <= total_bits <= 8:
        raise ValueError(f"total_bits must be an int in [2, 8], got {total_bits!r}")
    payload = total_bits - 1 if signed else total_bits  # bits after the sign bit
    values: list[float] = []
    for code in range(2**payload):
        zeros = payload - code.bit_length()  # leading zero bits = decimal exponent
        fraction_bits = payload - 1 - zeros  # bits after the indicator bit
        if code == 0:
            magnitude = 0.0
            special = 1.0  # the spare "negative zero" code of a signed map
        elif not signed and fraction_bits == 0:
            # Unsigned only: the code 0...01 has no fraction bits left; it stands for 1.0.
            magnitude, special = 1.0, None
        else:
            cells = 2**fraction_bits
            fraction = code & (cells - 1)
            magnitude = 10.0**-zeros * (0.1 + 0.9 * (fraction + 0.5) / cells)
            special = None
        values.append(magnitude)
        if signed:
            values.append(special if special is not None else -magnitude)
    out = torch.tensor(sorted(values), dtype=torch.float64)
    if out.numel() != 2**total_bits or bool((out[1:] <= out[:-1]).any()):
        raise AssertionError(f"dynamic map for {total_bits} bits is not {2**total_bits} "
                             "distinct sorted values")
    return out.to(torch.float32)


def minifloat_map(signed: bool = True, mantissa_bits: int = 3) -> Tensor:
    """The sorted entries of an 8-bit "minifloat" map, as float32: zero and the magnitudes
    ``2^e * (1 + k / 2^M)`` (``M = mantissa_bits``, ``k < 2^M``) whose float32 patterns are
    the ``n`` consecutive ``M``-bit-mantissa patterns ending at 1.0, with ``n = 127`` and
    both signs (255 entries) or ``n = 255`` and no sign (256 entries).

    With ``M = 3`` the signed map spans 1.25 * 2^-16 to 1 (16 binary octaves, 8 steps each,
    like an E4M3 float), the unsigned one 1.25 * 2^-32 to 1 (32 octaves). Every value
    between two neighbours is nearer the one whose pattern it rounds to, so the nearest
    entry is found from the float32 pattern with integer adds and shifts
    (:attr:`QuantMap.minifloat`; the native kernels encode it without a table).
    """
    if isinstance(mantissa_bits, bool) or not isinstance(mantissa_bits, int) or not (
            1 <= mantissa_bits <= 7):
        raise ValueError(f"mantissa_bits must be an int in [1, 7], got {mantissa_bits!r}")
    count = 127 if signed else 255
    shift = 23 - mantissa_bits
    offset = (0x3F800000 >> shift) - count
    if offset <= 1 << mantissa_bits:  # the smallest entry must stay a normal float
        raise ValueError(f"{mantissa_bits} mantissa bits leave too few exponent bits")
    patterns = (torch.arange(1, count + 1, dtype=torch.int64) + offset) << shift
    magnitudes = patterns.to(torch.int32).view(torch.float32)
    zero = torch.zeros(1, dtype=torch.float32)
    parts = [-magnitudes.flip(0), zero, magnitudes] if signed else [zero, magnitudes]
    return torch.cat(parts)


class QuantMap:
    """A sorted code book of [-1, 1] with a lookup table for exact nearest-entry encoding.

    Example:
        >>> import torch
        >>> from moopt.states.quantization import QuantMap
        >>> qmap = QuantMap(torch.tensor([-1.0, -0.25, 0.0, 0.5, 1.0]))
        >>> qmap.encode(torch.tensor([-0.7, 0.2, 0.3, 0.9]))
        tensor([0, 2, 3, 4], dtype=torch.uint8)
    """

    KEY_SHIFT = 16  # keep sign, exponent and 7 mantissa bits of the float32 pattern

    def __init__(self, values: Tensor, *, name: str = "custom",
                 minifloat: tuple[bool, int] | None = None) -> None:
        values = torch.as_tensor(values, dtype=torch.float32).flatten().cpu()
        if not 2 <= values.numel() <= 256:
            raise ValueError(f"a map needs 2..256 entries, got {values.numel()}")
        if bool((values[1:] <= values[:-1]).any()):
            raise ValueError("map entries must be strictly increasing")
        self.values = values
        self.name = name
        if minifloat is not None and not torch.equal(values, minifloat_map(*minifloat)):
            raise ValueError(f"the entries are not minifloat_map{minifloat}")
        # (signed, mantissa bits) when the entries are minifloat_map's: the native kernels
        # then encode by arithmetic on the float32 pattern (same codes as the table).
        self.minifloat = minifloat
        self.midpoints = ((values[1:].double() + values[:-1].double()) / 2).float()
        self._code_lo, self._threshold = self._build_tables()
        self._on_device: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}

    @property
    def bits(self) -> int:
        return max(1, (self.values.numel() - 1).bit_length())

    def _build_tables(self) -> tuple[Tensor, Tensor]:
        shift = self.KEY_SHIFT
        keys = np.arange(2 ** (32 - shift), dtype=np.uint64)
        lo_bits = (keys << np.uint64(shift)).astype(np.uint32)
        hi_bits = lo_bits | np.uint32((1 << shift) - 1)
        with np.errstate(invalid="ignore"):  # nan patterns are expected here
            lo = lo_bits.view(np.float32).astype(np.float64)
            hi = hi_bits.view(np.float32).astype(np.float64)
        # Patterns with exponent 255 (inf / nan) never occur for finite blocks; clip them.
        bad = ~(np.isfinite(lo) & np.isfinite(hi))
        lo[bad] = np.copysign(1.0, lo[bad])
        hi[bad] = lo[bad]
        a, b = np.minimum(lo, hi), np.maximum(lo, hi)
        mids = self.midpoints.double().numpy()
        # code(y) = number of midpoints strictly below y: the nearest entry (ties go down).
        ca = np.searchsorted(mids, a, side="left")
        cb = np.searchsorted(mids, b, side="left")
        if int((cb - ca).max()) > 1:
            raise ValueError("map entries are too close for a 16-bit lookup key")
        threshold = np.where(cb > ca, mids[np.minimum(ca, len(mids) - 1)], np.inf)
        return (torch.from_numpy(ca.astype(np.uint8)),
                torch.from_numpy(threshold.astype(np.float32)))

    def tables(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """(entries, code at the low end of each key, midpoint inside each key) on ``device``."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = (self.values.to(device), self._code_lo.to(device),
                                       self._threshold.to(device))
        return self._on_device[device]

    def encode(self, y: Tensor, out: Tensor | None = None) -> Tensor:
        """Codes (uint8) of the entries nearest to the float32 values ``y``."""
        _, code_lo, threshold = self.tables(y.device)
        codes = nearest_codes(y.reshape(-1), code_lo, threshold).view(y.shape)
        return codes if out is None else out.copy_(codes)

    def decode(self, codes: Tensor) -> Tensor:
        """The float32 entries of ``codes``."""
        values = self.tables(codes.device)[0]
        return values[codes.reshape(-1).long()].view(codes.shape)

    @functools.cached_property
    def _max_abs_error(self) -> float:
        v = self.values.double()
        low = -1.0 if float(v[0]) < 0 else 0.0
        gaps = [float((v[1:] - v[:-1]).max()) / 2, float(v[0]) - low, 1.0 - float(v[-1])]
        return max(gaps)

    def max_abs_error(self) -> float:
        """The largest ``|x - decode(encode(x))|`` over the map's range (half the widest gap,
        or the distance from an end of the range to the nearest entry)."""
        return self._max_abs_error


@functools.cache
def get_map(signed: bool = True, total_bits: int = 8) -> QuantMap:
    """The (cached) dynamic map of ``total_bits`` bits, signed or unsigned."""
    return QuantMap(dynamic_map(bool(signed), int(total_bits)), name="dynamic")


@functools.cache
def get_minifloat_map(signed: bool = True, mantissa_bits: int = 3) -> QuantMap:
    """The (cached) 8-bit minifloat map (:func:`minifloat_map`), signed or unsigned."""
    key = (bool(signed), int(mantissa_bits))
    return QuantMap(minifloat_map(*key), name=f"minifloat{mantissa_bits}", minifloat=key)


def num_blocks(numel: int, block_size: int) -> int:
    return -(-numel // block_size)


def nearest_codes(y: Tensor, code_lo: Tensor, threshold: Tensor) -> Tensor:
    """Codes of the map entries nearest to the flat float32 values ``y``, from the map's
    lookup tables (:meth:`QuantMap.tables`): the top 16 bits of a value's pattern pick the
    code at the low end of its interval, and one comparison with the midpoint inside it
    (if any) finishes."""
    key = torch.bitwise_right_shift(y.contiguous().view(torch.int32), QuantMap.KEY_SHIFT)
    key = torch.bitwise_and(key, 0xFFFF).long()
    return code_lo[key] + (y > threshold[key]).to(torch.uint8)


def _rows(flat: Tensor, block_size: int) -> Tensor:
    """``flat`` zero-padded to whole blocks, as ``(blocks, block_size)`` rows (zeros change
    no block maximum). Whole blocks are a view: under torch.compile a padded (symbolic) size
    would put a bounds mask and a 64-bit modulo on every vector of the fused loops."""
    if flat.numel() % block_size == 0:
        return flat.reshape(-1, block_size)
    blocks = num_blocks(flat.numel(), block_size)
    return torch.nn.functional.pad(flat, (0, blocks * block_size - flat.numel())).view(
        blocks, block_size)


def encode_blocks_with(flat: Tensor, block_size: int,
                       codes_of: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """``(codes, absmax)`` of the flat float32 ``flat``: each block's absmax, the quotients
    (:func:`block_quotients`) and ``codes_of(quotients)``, in torch ops only."""
    rows = _rows(flat, block_size)
    absmax = torch.amax(rows.abs(), dim=1)
    quotients = block_quotients(rows, absmax).view(-1)[:flat.numel()]
    return codes_of(quotients), absmax


def decode_blocks_with(entries: Tensor, absmax: Tensor, block_size: int) -> Tensor:
    """The flat float32 values of the flat map ``entries`` of the codes, times their block's
    ``absmax``."""
    return (_rows(entries, block_size) * absmax[:, None]).view(-1)[:entries.numel()]


def encode_blocks(flat: Tensor, code_lo: Tensor, threshold: Tensor,
                  block_size: int) -> tuple[Tensor, Tensor]:
    """The functional 8-bit encoder: ``(codes, absmax)`` of the flat float32 ``flat``, in
    torch ops only (the fused path compiles it; :func:`quantize_blockwise` wraps it)."""
    return encode_blocks_with(flat, block_size,
                              lambda q: nearest_codes(q, code_lo, threshold))


def decode_blocks(codes: Tensor, absmax: Tensor, values: Tensor, block_size: int) -> Tensor:
    """The functional 8-bit decoder: the flat float32 values of ``codes`` and ``absmax``."""
    return decode_blocks_with(values[codes.reshape(-1).long()], absmax, block_size)


def quantize_blockwise(
    x: Tensor,
    qmap: QuantMap,
    block_size: int = 256,
    *,
    codes: Tensor | None = None,
    absmax: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Quantize ``x`` block-wise: returns flat uint8 ``codes`` and float32 ``absmax``.

    ``codes`` / ``absmax`` may be given to write into (shapes ``(numel,)`` and
    ``(ceil(numel / block_size),)``).
    """
    flat = x.detach().reshape(-1).float()
    _, code_lo, threshold = qmap.tables(flat.device)
    new_codes, new_absmax = encode_blocks(flat, code_lo, threshold, block_size)
    if codes is not None:
        new_codes = codes.copy_(new_codes.view(codes.shape))
    if absmax is not None:
        new_absmax = absmax.copy_(new_absmax.view(absmax.shape))
    return new_codes, new_absmax


def block_quotients(rows: Tensor, amax: Tensor, *, out: Tensor | None = None) -> Tensor:
    """The values of float32 ``rows`` relative to their block maxima ``amax``, as encoded.

    ``x * r`` with ``r = 1 / amax`` rounded once: within 2 ulps of ``x / amax``, so a code
    can differ from the exact quotient's only within about 2^-22 (relative) of a map
    midpoint, and a kernel needs no division per value. Finite scales outside [2^-77, 2^100)
    are first brought near 1 by an exact power of two ``f`` (``2^(127 - e)`` for exponent
    field ``e``), ``(x * f) * (1 / (amax * f))``, so that the reciprocal stays a normal float;
    an infinite scale has ``r = 0``. All-zero and
    NaN blocks keep scale 1 (their codes encode the values themselves). The native kernels
    (moopt/states/fast/native.c) compute the same products bit for bit.
    """
    exponent = (amax.view(torch.int32) & 0x7FFFFFFF) >> 23
    positive = amax > 0
    rescale = positive & ((exponent < 50) | ((exponent > 226) & (exponent < 255)))
    # 2^(127 - e) as a float32 pattern; for e = 254 that is the subnormal 2^-127.
    power = torch.where(exponent == 254, 0x00400000, (254 - exponent) << 23)
    f = torch.where(rescale, power, 127 << 23).view(torch.float32)
    r = torch.where(positive, 1.0 / (amax * f), 1.0)
    return torch.mul(rows, f[:, None], out=out).mul_(r[:, None])


def dequantize_blockwise(
    codes: Tensor,
    absmax: Tensor,
    qmap: QuantMap,
    block_size: int = 256,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """The flat float32 tensor encoded by ``codes`` and ``absmax``."""
    values = decode_blocks(codes, absmax, qmap.tables(codes.device)[0], block_size)
    if out is None:
        return values
    out.view(-1).copy_(values)
    return out


class BlockCodec(Codec):
    """The 8-bit block-wise codec in torch ops (what the fused path compiles): codes and
    block scales decode through the map's entries; encoding takes each block's absmax, the
    quotients and the map's lookup tables (:mod:`moopt.states.quantization`)."""

    parts = ("codes", "absmax")
    elementwise = False  # a block's scale depends on its neighbours

    def __init__(self, qmap: QuantMap, block_size: int) -> None:
        self.qmap = qmap
        self.block_size = block_size

    @property
    def key(self) -> tuple:
        return ("int8", self.block_size, self.qmap.name, self.qmap.bits,
                float(self.qmap.values[0]))

    def constants(self, device: torch.device) -> tuple[Tensor, ...]:
        return self.qmap.tables(device)

    def decode(self, parts, constants, dtype, numel):
        codes, absmax = parts
        return decode_blocks(codes, absmax, constants[0], self.block_size).to(dtype)

    def encode(self, value, constants):
        return encode_blocks(value.float(), constants[1], constants[2], self.block_size)
