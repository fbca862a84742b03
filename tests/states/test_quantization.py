"""Block-wise dynamic quantization: the map, exact nearest encoding, round-trip error."""

import pytest
import torch

from moopt.states.quantization import (
    QuantMap,
    dequantize_blockwise,
    dynamic_map,
    get_map,
    quantize_blockwise,
)


def brute_nearest(y: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Index of the nearest map entry by exhaustive float64 search (ties to the lower)."""
    d = (y.double()[:, None] - values.double()[None, :]).abs()
    return d.argmin(dim=1)


def test_signed_map_by_hand():
    v = dynamic_map(signed=True).double()
    assert v.numel() == 256 and bool((v[1:] > v[:-1]).all())
    assert v[-1] == 1.0 and 0.0 in v.tolist()
    # Top decade: 64 midpoints of equal cells of [0.1, 1]; the lowest decade one at 0.55e-6.
    assert v[0].item() == pytest.approx(-(0.1 + 0.9 * 63.5 / 64), rel=1e-7)
    assert v[v > 0].min().item() == pytest.approx(0.55e-6, rel=1e-6)
    assert int((v.abs() >= 0.1).sum()) == 2 * 64 + 1  # top decade of each sign, and 1.0
    # 127 positive decade entries plus the spare code 1.0; 127 negative entries; and 0.
    assert int((v > 0).sum()) == 128 and int((v < 0).sum()) == 127


def test_unsigned_map_by_hand():
    v = dynamic_map(signed=False).double()
    assert v.numel() == 256 and v[0] == 0.0 and v[-1] == 1.0
    assert int(((v >= 0.1) & (v < 1)).sum()) == 128  # one more fraction bit than signed
    assert v[1].item() == pytest.approx(1e-6 * (0.1 + 0.9 * 0.25), rel=1e-6)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bits", [8, 4])
def test_map_equals_bitsandbytes(signed, bits):
    F = pytest.importorskip("bitsandbytes.functional",
                            reason="bitsandbytes is the optional test-only reference")
    theirs = torch.unique(F.create_dynamic_map(signed, bits - 1, bits))  # drops 4-bit padding
    ours = dynamic_map(signed, bits)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("signed", [True, False])
def test_encode_is_exact_nearest(signed):
    qmap = get_map(signed)
    gen = torch.Generator().manual_seed(0)
    low = -1.0 if signed else 0.0
    mids = qmap.midpoints
    ulp_up = torch.nextafter(mids, torch.full_like(mids, 2.0))
    ulp_down = torch.nextafter(mids, torch.full_like(mids, -2.0))
    y = torch.cat([
        torch.rand(20000, generator=gen) * (1 - low) + low,
        (torch.rand(5000, generator=gen) * 2 - 1) * 10.0 ** -torch.randint(0, 9, (5000,),
                                                                           generator=gen),
        qmap.values, ulp_up, ulp_down, torch.tensor([0.0, -0.0, 1.0, 1e-40, -1e-40, low]),
    ]).clamp(low, 1.0)
    got = qmap.encode(y).long()
    want = brute_nearest(y, qmap.values)
    # Exactly-at-midpoint ties may go either way; everything else must match.
    tie = (y.double() - qmap.values.double()[want]).abs() == (
        y.double() - qmap.values.double()[got]).abs()
    assert bool(((got == want) | tie).all())


# Block scales across the whole float32 range: subnormal, both ends of the range where the
# reciprocal is taken as is ([2^-77, 2^100)), just outside it, and the largest floats.
EXTREME_SCALES = [1e-45, 3e-42, 2.0**-126, 2.0**-77 * (1 - 2**-24), 2.0**-77, 1e-3, 1.0,
                  2.0**100 * (1 - 2**-24), 2.0**100, 2.0**126, 2.0**127, 3.4e38]


@pytest.mark.parametrize("signed", [True, False])
def test_codes_are_nearest_to_the_exact_quotient(signed):
    """Float64 reference: every code is the map entry nearest to x / absmax computed
    exactly, except within a few float32 ulps of a midpoint (the codec multiplies by the
    rounded reciprocal, see block_quotients) and at exact ties."""
    qmap = get_map(signed)
    gen = torch.Generator().manual_seed(11)
    mids = qmap.midpoints if signed else qmap.midpoints[qmap.midpoints > 0]
    blocks = []
    for scale in EXTREME_SCALES:
        pick = mids[torch.randint(0, mids.numel(), (200,), generator=gen)].double()
        jitter = 1 + (torch.rand(200, generator=gen, dtype=torch.float64) - 0.5) * 2**-18
        x = torch.cat([torch.tensor([1.0]), torch.rand(55, generator=gen, dtype=torch.float64)
                       * (2 if signed else 1) - (1 if signed else 0), pick * jitter])
        blocks.append((x * scale).float())  # the first value is the block's maximum
    x = torch.cat(blocks)
    codes, absmax = quantize_blockwise(x, qmap, 256)
    assert torch.equal(absmax, torch.tensor(EXTREME_SCALES, dtype=torch.float32))
    exact = x.double() / absmax.double().repeat_interleave(256)
    want = brute_nearest(exact, qmap.values)
    got = codes.long()
    values = qmap.values.double()
    tie = (exact - values[want]).abs() == (exact - values[got]).abs()
    near_mid = ((exact[:, None] - qmap.midpoints.double()[None, :]).abs()
                <= 2.0**-21 * exact.abs()[:, None]).any(1)
    assert bool(((got == want) | tie | near_mid).all())
    # Not vacuous: the jittered values straddle midpoints, most are decided exactly.
    assert int((got == want).sum()) > 0.9 * got.numel()


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), 0.0])
def test_non_finite_and_zero_scales(scale):
    """An infinite block maximum gives reciprocal 0 (finite values encode as 0, inf as NaN,
    like x / inf); zero and NaN blocks keep scale 1."""
    qmap = get_map(True)
    x = torch.tensor([scale, 0.5, -2.0, 0.0] + [0.0] * 252)
    if scale == 0.0:
        x[1:3] = 0.0
    codes, absmax = quantize_blockwise(x, qmap, 256)
    assert absmax[0].isnan() if scale != scale else absmax[0] == abs(scale)
    zero = int(qmap.encode(torch.tensor([0.0]))[0])
    if scale == float("inf"):
        assert codes[1:].tolist() == [zero] * 255
    elif scale == 0.0:
        assert codes.tolist() == [zero] * 256


def test_custom_map_encode_decode():
    qmap = QuantMap(torch.tensor([-1.0, -0.25, 0.0, 0.5, 1.0]))
    codes = qmap.encode(torch.tensor([-0.9, -0.5, -0.1, 0.24, 0.26, 0.8]))
    assert codes.tolist() == [0, 1, 2, 2, 3, 4]
    assert qmap.decode(codes).tolist() == [-1.0, -0.25, 0.0, 0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="strictly increasing"):
        QuantMap(torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("n", [256 * 7, 1000, 5, 256])
@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_bound_and_shapes(n, signed):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=gen) * torch.logspace(-3, 3, n)
    if not signed:
        x = x.abs()
    qmap = get_map(signed)
    codes, absmax = quantize_blockwise(x, qmap, 256)
    assert codes.shape == (n,) and absmax.shape == (-(-n // 256),)
    y = dequantize_blockwise(codes, absmax, qmap, 256)
    blocks = torch.nn.functional.pad(x, (0, (-n) % 256)).view(-1, 256)
    torch.testing.assert_close(absmax, blocks.abs().amax(1))
    err = (torch.nn.functional.pad(y - x, (0, (-n) % 256)).view(-1, 256)).abs().amax(1)
    assert bool((err <= qmap.max_abs_error() * absmax * (1 + 1e-4)).all())


def test_zero_block_and_out_buffers():
    x = torch.cat([torch.zeros(256), torch.randn(300)])
    qmap = get_map(True)
    codes = torch.full((556,), 7, dtype=torch.uint8)
    absmax = torch.full((3,), -1.0)
    quantize_blockwise(x, qmap, 256, codes=codes, absmax=absmax)
    assert absmax[0] == 0
    y = dequantize_blockwise(codes, absmax, qmap, 256)
    assert bool(torch.isfinite(y).all()) and bool((y[:256] == 0).all())
    out = torch.empty(556)
    assert dequantize_blockwise(codes, absmax, qmap, 256, out=out) is out
    torch.testing.assert_close(out, y)


@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_no_worse_than_bitsandbytes(signed):
    F = pytest.importorskip("bitsandbytes.functional",
                            reason="bitsandbytes is the optional test-only reference")
    gen = torch.Generator().manual_seed(3)
    # Optimizer-like data: heavy-tailed, scales varying across blocks.
    x = torch.randn(256 * 64, generator=gen) ** 3 * torch.logspace(-4, 2, 256 * 64)
    if not signed:
        x = x.abs()
    qmap = get_map(signed)
    codes, absmax = quantize_blockwise(x, qmap, 256)
    ours = (dequantize_blockwise(codes, absmax, qmap, 256) - x).abs().view(-1, 256)
    q, state = F.quantize_blockwise(x, code=F.create_dynamic_map(signed), blocksize=256)
    theirs = (F.dequantize_blockwise(q, state) - x).abs().view(-1, 256)
    # Per block, mean and max error no worse (maps agree to float32 rounding).
    assert bool((ours.mean(1) <= theirs.mean(1) * (1 + 1e-5) + 1e-12).all())
    assert bool((ours.amax(1) <= theirs.amax(1) * (1 + 1e-5) + 1e-12).all())


def test_map_argument_errors():
    with pytest.raises(ValueError, match="total_bits"):
        dynamic_map(True, 9)
