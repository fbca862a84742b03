"""The 8-bit minifloat map (``storage="fp8"``) and its native arithmetic encoder.

The map is checked against its definition in float64 and against a brute-force nearest
search; the native kernels' encoder (integer arithmetic on the float32 pattern, no table)
against the torch codec (the map's lookup table) on every pattern near every midpoint, a
stride through all patterns, special values and extreme block scales; so is the torch
arithmetic codec that the fused and compiled paths use (``MinifloatCodec``). ``-m slow``
runs all float32 patterns of [-1, 1] (and a little beyond) for both maps.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import moopt
from moopt.states.fast import native
from moopt.states.fp8 import Fp8Storage
from moopt.states.minifloat_codec import MinifloatCodec, minifloat_codes, minifloat_entries
from moopt.states.quantization import (
    BlockCodec,
    QuantMap,
    dequantize_blockwise,
    get_map,
    get_minifloat_map,
    minifloat_map,
    quantize_blockwise,
)
from tests.states.test_native import run_tests_built_for
from tests.states.test_quantization import EXTREME_SCALES


@pytest.fixture(scope="module")
def lib():
    library = native.library() if native.mode() != "off" else native._build()
    assert library is not None, f"native kernels did not build: {native.failure()}"
    return library


@pytest.mark.parametrize("signed", [True, False])
def test_map_is_its_definition_in_float64(signed):
    values = minifloat_map(signed).double()
    count = 127 if signed else 255
    # magnitudes 2^e (1 + k/8), consecutive, ending at 1.0
    want = []
    e, k = -1, 7
    for _ in range(count - 1):
        want.append(2.0 ** e * (1 + k / 8))
        k -= 1
        if k < 0:
            e, k = e - 1, 7
    magnitudes = torch.tensor(sorted(want) + [1.0], dtype=torch.float64)
    expected = (torch.cat([-magnitudes.flip(0), torch.zeros(1), magnitudes]) if signed
                else torch.cat([torch.zeros(1), magnitudes]))
    assert torch.equal(values, expected)
    smallest = 1.25 * 2.0 ** (-16 if signed else -32)
    assert float(magnitudes[0]) == smallest


@pytest.mark.parametrize("signed", [True, False])
def test_relative_error_is_at_most_one_sixteenth(signed):
    qmap = get_minifloat_map(signed)
    gen = torch.Generator().manual_seed(0)
    smallest = float(qmap.values[qmap.values > 0][0])  # from there up to 1
    x = smallest ** torch.rand(200_000, generator=gen, dtype=torch.float64)
    x = x.float()
    if signed:
        x = x * torch.where(torch.rand(x.shape, generator=gen) < 0.5, -1.0, 1.0)
    y = qmap.decode(qmap.encode(x)).double()
    rel = ((y - x.double()).abs() / x.double().abs()).max()
    assert float(rel) <= 1 / 16
    assert qmap.max_abs_error() == 1 / 32  # half the widest gap, [0.5, 1)


@pytest.mark.parametrize("signed", [True, False])
def test_table_codec_is_the_nearest_entry(signed):
    qmap = get_minifloat_map(signed)
    gen = torch.Generator().manual_seed(1)
    mids = qmap.midpoints
    x = torch.cat([mids, torch.nextafter(mids, torch.tensor(2.0)),
                   torch.nextafter(mids, torch.tensor(-2.0)),
                   torch.rand(20_000, generator=gen) * 2 - (1 if signed else 0)])
    codes = qmap.encode(x).long()
    dist = (x.double()[:, None] - qmap.values.double()[None, :]).abs()
    best = dist.min(dim=1).values
    assert torch.equal(dist.gather(1, codes[:, None])[:, 0], best)
    # ties (exact midpoints) go to the lower entry
    assert torch.equal(qmap.encode(mids).long(), torch.arange(mids.numel()))


def test_quantmap_checks_the_minifloat_claim():
    with pytest.raises(ValueError, match="not minifloat_map"):
        QuantMap(torch.linspace(-1, 1, 255), minifloat=(True, 3))
    with pytest.raises(ValueError, match="mantissa_bits"):
        minifloat_map(True, 0)


def _near_midpoints(qmap, ulps=3):
    """Every midpoint and its neighbours within ``ulps`` float32 steps, both ways."""
    bits = qmap.midpoints.view(torch.int32).long()
    out = [bits]
    for d in range(1, ulps + 1):
        out += [bits + d, bits - d]
    return torch.cat(out).clamp(-(2**31), 2**31 - 1).to(torch.int32).view(torch.float32)


def _blocks(values, block):
    """``values`` laid out in blocks whose first value is 1.0, so that the quotients are the
    values themselves."""
    body = block - 1
    nb = -(-values.numel() // body)
    padded = torch.zeros(nb * body)
    padded[:values.numel()] = values
    return torch.cat([torch.ones(nb, 1), padded.view(nb, body)], 1).reshape(-1)


def _assert_codecs_agree(lib, qmap, x, block):
    want_codes, want_absmax = quantize_blockwise(x, qmap, block)
    codes, absmax = torch.empty_like(want_codes), torch.empty_like(want_absmax)
    assert native.encode(lib, x, codes, absmax, qmap, block)
    assert torch.equal(absmax.nan_to_num(), want_absmax.nan_to_num())
    bad = (codes != want_codes).nonzero()
    assert bad.numel() == 0, (f"{bad.numel()} codes differ, first at value "
                              f"{float(x[bad[0, 0]])!r}")
    out = native.decode(lib, codes, absmax, qmap, block, torch.empty_like(x))
    torch.testing.assert_close(out, dequantize_blockwise(codes, absmax, qmap, block),
                               rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("mantissa_bits", [2, 3, 4, 7])
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_native_decoder_gives_the_entries_of_every_code(signed, mantissa_bits, lib):
    """The native decoder's arithmetic (native.c minifloat_decode) against the torch one,
    on all 256 codes (255 of a signed map, never written, too) in blocks of 64 with scales
    of 1, a non-power of two, a subnormal, 0, inf and NaN, plus a 20-value tail."""
    qmap = Fp8Storage(mantissa_bits=mantissa_bits).qmap(signed)
    codes = torch.arange(256, dtype=torch.uint8).roll(37).repeat(3)[:8 * 64 + 20]
    scales = [1.0, 3.7, 1e-40, 0.0, math.inf, math.nan, 0.5, -2.0, 2.0**100]
    absmax = torch.tensor(scales, dtype=torch.float32)
    out = native.decode(lib, codes, absmax, qmap, 64, torch.empty(codes.numel()))
    want = minifloat_entries(codes, signed, mantissa_bits) * absmax.repeat_interleave(64)[
        :codes.numel()]
    torch.testing.assert_close(out, want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize(("signed", "block", "mantissa_bits"), [
    (signed, block, 3) for signed in (True, False) for block in (256, 64, 100)] + [
    (True, 256, 2), (False, 256, 2), (True, 256, 4), (False, 100, 4), (True, 100, 7),
    (False, 256, 6)])
def test_native_encoder_equals_the_table_codec(signed, block, mantissa_bits, lib):
    qmap = get_minifloat_map(signed, mantissa_bits)
    specials = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 1.0, -1.0, math.nan, -math.nan,
                             math.inf, -math.inf, 1.0000001, -1.0000001, 2.0, -3.0])
    stride = torch.arange(0, 0x3F800100, 9_973, dtype=torch.int64)
    pattern = torch.cat([stride, stride | (1 << 31)])
    pattern = torch.where(pattern >= 1 << 31, pattern - (1 << 32), pattern)
    strided = pattern.to(torch.int32).view(torch.float32)
    values = torch.cat([_near_midpoints(qmap), -_near_midpoints(qmap), strided, specials])
    _assert_codecs_agree(lib, qmap, _blocks(values, block), block)


@pytest.mark.parametrize("mantissa_bits", [3, 4])
@pytest.mark.parametrize("signed", [True, False])
def test_native_encoder_at_extreme_scales(signed, mantissa_bits, lib):
    """Scales from subnormal to the largest float (the pre-scaled quotient variant)."""
    qmap = get_minifloat_map(signed, mantissa_bits)
    gen = torch.Generator().manual_seed(2)
    blocks = []
    for scale in EXTREME_SCALES:
        pick = qmap.midpoints[torch.randint(0, qmap.midpoints.numel(), (256,), generator=gen)]
        x = pick.double() * scale
        x[0] = scale
        blocks.append(x.float())
    x = torch.cat(blocks + [torch.randn(10_007, generator=gen) * 3e-4])
    if not signed:
        x = x.abs()
    _assert_codecs_agree(lib, qmap, x, 256)


def test_native_encoder_does_not_read_the_table(lib):
    """On CPUs with AVX-512 the block bodies are encoded by arithmetic: with a zeroed lookup
    table they still come out right (the tails, done by the table, do not)."""
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text().split() if cpuinfo.exists() else []
    if "avx512f" not in flags or "avx512dq" not in flags:
        pytest.skip("the arithmetic encoder is written for AVX-512 F and DQ")
    qmap = get_minifloat_map(True)
    x = _blocks(torch.rand(255 * 64) * 2 - 1, 256)
    want, _ = quantize_blockwise(x, qmap, 256)
    values, table, planes = native._map_tables(qmap)
    zeros = torch.zeros_like(table)
    codes, absmax = torch.empty_like(want), torch.empty(x.numel() // 256)
    buf = native.Buf(native.KIND["int8"], 256, codes.data_ptr(), absmax.data_ptr(),
                     values.data_ptr(), zeros.data_ptr(), planes.data_ptr(), 1, 20)
    lib.moopt_encode(buf, x.numel(), x.data_ptr(), 1)
    assert torch.equal(codes, want)


@pytest.mark.parametrize("policy", ["shared", "decoupled", "bridged"])
def test_fp8_storage_trains_like_fp32(policy):
    """Two conflicting regression targets, 1:5 alternation: shared and decoupled with fp8
    state end within 2% of fp32; bridged (whose end point rounding alone moves, and which
    low-bit state damps) at most 2% above it, like int8 (docs/benchmarks.md, Quality)."""
    def final_loss(storage):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(256, 64, generator=gen)
        w = torch.randn(64, 64, generator=gen) / 8
        targets = {"a": x @ w.T, "b": x @ (w + torch.randn(64, 64, generator=gen) / 16).T}
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 64)
        opt = moopt.MultiObjectiveOptimizer(model.parameters(), ["a", "b"], policy,
                                            storage, lr=1e-2)
        for i in range(120):
            k = "a" if i % 6 == 0 else "b"
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), targets[k]).backward()
            opt.step(objective=k)
        with torch.no_grad():
            return sum(float(torch.nn.functional.mse_loss(model(x), t))
                       for t in targets.values())

    fp32 = final_loss("fp32")
    for mantissa_bits in (3, 4):
        fp8 = final_loss(Fp8Storage(min_size=0, mantissa_bits=mantissa_bits))
        assert fp8 <= 1.02 * fp32, (mantissa_bits, fp8, fp32)
        if policy != "bridged":
            assert fp8 >= 0.98 * fp32, (mantissa_bits, fp8, fp32)


@pytest.mark.parametrize(("signed", "mantissa_bits"), [(True, 3), (False, 3), (True, 4),
                                                      (False, 4), (True, 2), (False, 7)])
def test_torch_arithmetic_codec_equals_the_table_codec(signed, mantissa_bits):
    """The torch ops of ``MinifloatCodec`` (what torch.compile builds for fp8): every
    entry decodes to the map's value; codes equal the table's near every midpoint, on a
    stride through all patterns of [-1, 1] and beyond, and on special values."""
    qmap = get_minifloat_map(signed, mantissa_bits)
    codes = torch.arange(qmap.values.numel(), dtype=torch.uint8)
    assert torch.equal(minifloat_entries(codes, signed, mantissa_bits), qmap.values)
    stride = torch.arange(0, 0x40000000, 7_919, dtype=torch.int64)
    pattern = torch.cat([stride, stride | (1 << 31), torch.tensor([0x7F800000, 0xFF800000,
                                                                   0x7FC00000, 0xFFC00000])])
    pattern = torch.where(pattern >= 1 << 31, pattern - (1 << 32), pattern)
    q = torch.cat([_near_midpoints(qmap), -_near_midpoints(qmap),
                   pattern.to(torch.int32).view(torch.float32)])
    got, want = minifloat_codes(q, signed, mantissa_bits), qmap.encode(q)
    bad = (got != want).nonzero()
    assert bad.numel() == 0, f"{bad.numel()} codes differ, first at {float(q[bad[0, 0]])!r}"


def test_fp8_codec_is_the_arithmetic_one_with_the_table_codecs_parts():
    """fp8's codec (fused and compiled paths) gives the parts the table codec gives, blocks
    with zero, NaN and infinite scales included."""
    storage = Fp8Storage(block_size=64, min_size=0)
    gen = torch.Generator().manual_seed(3)
    value = torch.randn(64 * 40 + 17, generator=gen) * torch.logspace(-30, 30, 64 * 40 + 17)
    value[64:128] = 0.0
    value[130] = math.nan
    value[200] = -math.inf
    for signed in (True, False):
        x = value if signed else value.abs()
        codec = storage.codec(x, signed=signed)
        assert isinstance(codec, MinifloatCodec)
        table = BlockCodec(storage.qmap(signed), 64)
        got, want = codec.encode(x, ()), table.encode(x, table.constants(x.device))
        assert torch.equal(got[0], want[0])
        assert torch.equal(got[1].nan_to_num(), want[1].nan_to_num())
        torch.testing.assert_close(
            codec.decode(got, (), torch.float32, x.numel()),
            table.decode(want, table.constants(x.device), torch.float32, x.numel()),
            rtol=0, atol=0, equal_nan=True)
    with pytest.raises(ValueError, match="not a minifloat map"):
        MinifloatCodec(get_map(True), 256)


def test_fp8_mantissa_bits_are_checked_and_recorded():
    """Bad values are named; the setting is part of the storage's config, so a checkpoint
    of one code book does not load into an optimizer with another."""
    for bad in (0, 1, 8, True, 3.0, "3"):
        with pytest.raises(ValueError, match=f"mantissa_bits.*{bad!r}"):
            Fp8Storage(mantissa_bits=bad)
    finer = Fp8Storage(mantissa_bits=4)
    assert finer.config()["mantissa_bits"] == 4
    # half the largest gap, [1/2, 1) in steps of 2^-(M+1), relative to the block maximum
    assert finer.qmap(True).max_abs_error() == 2.0**-6
    assert Fp8Storage().qmap(True).max_abs_error() == 2.0**-5

    def trained(storage):
        p = torch.nn.Parameter(torch.randn(8192, generator=torch.Generator().manual_seed(0)))
        opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", storage, lr=1e-3)
        for k in "ab":
            p.grad = torch.randn_like(p)
            opt.step(objective=k)
        return opt

    saved = trained(Fp8Storage()).state_dict()
    other = trained(finer)
    with pytest.raises(moopt.StateMismatchError, match="mantissa_bits"):
        other.load_state_dict(saved)
    same = trained(Fp8Storage())
    same.load_state_dict(saved)


@pytest.mark.slow
@pytest.mark.parametrize("signed", [True, False])
def test_native_encoder_on_every_pattern(signed, lib):
    """All float32 patterns from 0 to just above 1.0, both signs (about 2.1e9 values): the
    native encoder and the torch arithmetic codec against the table."""
    qmap = get_minifloat_map(signed)
    torch.set_num_threads(2)
    span = 255 * (1 << 16)
    for sign in (0, 1 << 31):
        for low in range(0, 0x3F800100, span):
            pattern = torch.arange(low, min(low + span, 0x3F800100), dtype=torch.int64) | sign
            pattern = torch.where(pattern >= 1 << 31, pattern - (1 << 32), pattern)
            values = pattern.to(torch.int32).view(torch.float32)
            _assert_codecs_agree(lib, qmap, _blocks(values, 256), 256)
            assert torch.equal(minifloat_codes(values, signed, 3), qmap.encode(values))


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


@pytest.mark.parametrize(("arch", "needs"), [
    ("-march=skylake-avx512", {"avx512f", "avx512dq", "avx512bw"}),
    ("-march=x86-64-v3 -mavx512f -mavx512dq", {"avx512f", "avx512dq"})],
    ids=["avx512-without-vbmi", "avx512-without-bw"])
def test_minifloat_kernels_of_other_avx512_sets(arch, needs, tmp_path):
    """The minifloat codec's narrower AVX-512 paths (this machine may take the 16-bit-lane
    ones, which need BW and VBMI): the native codec tests and the fp8 bridged contract, in a
    process whose library is built for ``arch``."""
    if not needs <= _cpu_flags():
        pytest.skip(f"this CPU lacks {sorted(needs - _cpu_flags())}")
    run_tests_built_for(arch, tmp_path,
                        [__file__, str(Path(__file__).with_name("test_contract.py"))],
                        "native or (fp8 and bridged)")
