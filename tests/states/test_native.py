"""The native CPU kernels (moopt/states/fast/native.c) against the torch kernels.

States must agree bit for bit: their arithmetic never touches a square root, and the 8-bit
codec must produce the very codes of moopt.states.quantization. Parameters may differ by an
ulp per step: torch's vectorised float32 sqrt is not always correctly rounded, the C one is.
"""

from __future__ import annotations

import math
import weakref

import pytest
import torch

import moopt
from moopt.states.fast import native
from moopt.states.fast.kernels import (
    adam_scalar_values,
    bridged_kernel,
    bridged_scalar_values,
    shared_kernel,
)
from moopt.states.int8 import Int8Storage
from moopt.states.quantization import dequantize_blockwise, get_map, quantize_blockwise
from tests.states.test_quantization import EXTREME_SCALES

POLICIES = ["shared", "decoupled", "bridged"]
EPS32 = torch.finfo(torch.float32).eps


@pytest.fixture(scope="module")
def lib():
    # A C compiler is part of this project's supported setup (torch.compile needs one too):
    # a failing build is a failure here, not a skip.
    library = native.library(sync=True) if native.mode() != "off" else native._build()
    assert library is not None, f"native kernels did not build: {native.failure()}"
    return library


def run(policy, storage, *, use_native, monkeypatch, steps=10, threads=1, seed=0,
        joint=False):
    monkeypatch.setenv("MOOPT_NATIVE", "sync" if use_native else "0")
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    shapes = [(300, 257), (5000,), (7,), (64, 3)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    opt = moopt.MultiObjectiveOptimizer(params, ["a", "b"], policy, storage, lr=1e-2,
                                        weight_decay=0.1, lr_ratios={"a": 0.5})
    for i in range(steps):
        for p in params:
            # Gradient scales from 1e-6 to 10 exercise the codec across the map's range.
            scale = 10.0 ** float(torch.randint(-6, 2, (1,), generator=gen))
            p.grad = torch.randn(p.shape, generator=gen) * scale
        if joint:  # "a" takes these gradients, "b" their mirror
            grads = [p.grad for p in params]
            opt.stash_grads("a")
            for p, g in zip(params, grads):
                p.grad = -0.5 * g
            opt.stash_grads("b")
            opt.step(weights={"a": 1.0, "b": 3.0})
        else:
            opt.step(objective="a" if i % 3 == 0 else "b")
    return params, opt


# Blocks smaller and larger than the kernel's 512-value pieces, and mixed storages with and
# without 8-bit buffers (bf16 + fp32 goes through scratch without block maxima).
STORAGES = ["fp32", "bf16", "int8", Int8Storage(block_size=64, min_size=0),
            Int8Storage(block_size=100, min_size=0), Int8Storage(block_size=1024, min_size=0),
            {"base": "fp32", "delta": "int8"}, {"base": "int8", "delta": "bf16"},
            {"base": "bf16", "delta": "fp32"}]


@pytest.mark.parametrize("storage", STORAGES, ids=repr)
@pytest.mark.parametrize("policy", POLICIES)
def test_native_step_equals_torch_kernels(policy, storage, lib, monkeypatch):
    steps = 10
    fast, opt_fast = run(policy, storage, use_native=True, monkeypatch=monkeypatch,
                         steps=steps)
    ref, opt_ref = run(policy, storage, use_native=False, monkeypatch=monkeypatch,
                       steps=steps)
    for a, b in zip(fast, ref):
        # One ulp of the direction per step at most (the sqrt), on the parameter's scale.
        bound = steps * 2 * EPS32 * b.detach().abs().max()
        assert (a - b).abs().max() <= bound
        sa, sb = opt_fast.state[a], opt_ref.state[b]
        assert sa.keys() == sb.keys()
        for key in sa:
            if isinstance(sa[key], torch.Tensor):
                assert torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key]


@pytest.mark.parametrize("joint", [False, True], ids=["alternating", "joint"])
@pytest.mark.parametrize("policy", POLICIES)
def test_threads_do_not_change_results(policy, joint, lib, monkeypatch):
    threads = torch.get_num_threads()
    try:
        one, _ = run(policy, "int8", use_native=True, monkeypatch=monkeypatch, threads=1,
                     joint=joint)
        two, _ = run(policy, "int8", use_native=True, monkeypatch=monkeypatch, threads=2,
                     joint=joint)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def _direct(kind, n=4099, seed=0):
    """Inputs for one kernel call: p, g, and 2 or 4 float32 state buffers."""
    gen = torch.Generator().manual_seed(seed)
    p, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen) * 1e-2
    count = 4 if kind == "bridged" else 2
    bufs = [torch.randn(n, generator=gen) * 1e-3 for _ in range(count)]
    bufs[1] = bufs[1].abs()  # a true second moment
    return p, g, bufs


@pytest.mark.parametrize("bound", [math.inf, 0.5])
def test_adam_kernel_float64_rederivation(bound, lib):
    p, g, (m, v) = _direct("adam")
    s = adam_scalar_values(decay=0.999, lr=1e-2, betas=(0.9, 0.999), step=3, eps=1e-8,
                           bound=bound)
    p64, g64, m64, v64 = (t.double() for t in (p, g, m, v))
    s32 = [float(torch.tensor(x, dtype=torch.float32)) for x in s]
    decay, lr, b1, b2, c1, c2, eps, clip = s32
    m_new = m64 * b1 + g64 * (1 - b1)
    v_new = v64 * b2 + g64 * g64 * (1 - b2)
    direction = ((m_new * c1) / ((v_new * c2).sqrt() + eps)).clamp(-clip, clip)
    want = p64 * decay - lr * direction
    assert native.step(lib, "adam", p, g, [native.f32_buffer(m), native.f32_buffer(v)], s)
    assert ((p.double() - want).abs() <= 4 * EPS32 * want.abs().clamp_min(1e-3)).all()
    # Three roundings of float32 terms: within 3 ulps of the terms' magnitudes.
    terms = (m64 * b1).abs() + (g64 * (1 - b1)).abs()
    assert ((m.double() - m_new).abs() <= 3 * EPS32 * terms).all()


def test_kernels_match_the_eager_ones_on_states(lib):
    for kind, kernel in (("adam", shared_kernel), ("bridged", bridged_kernel)):
        p, g, bufs = _direct(kind, seed=1)
        if kind == "adam":
            s = adam_scalar_values(decay=1.0, lr=1e-3, betas=(0.9, 0.95), step=7, eps=1e-8)
        else:
            s = bridged_scalar_values(decay=0.99, lr=1e-3, betas=(0.9, 0.95),
                                      base_betas=(0.9, 0.99), T=9, t_k=4, eps=1e-8,
                                      guard_u=8 * 2.0**-24, bound=3.0)
        p2, bufs2 = p.clone(), [b.clone() for b in bufs]
        kernel(p2, g, *[(b,) for b in bufs2], tuple("plain" for _ in bufs2), torch.tensor(s))
        assert native.step(lib, kind, p, g, [native.f32_buffer(b) for b in bufs], s)
        for a, b in zip(bufs, bufs2):
            assert torch.equal(a, b)
        assert ((p - p2).abs() <= 2 * EPS32 * p2.abs()).all()


@pytest.mark.parametrize("storage", ["fp32", "int8"])
def test_joint_kernels_equal_their_parts(storage, lib):
    """The joint-mode kernels against what they stand for, bit for bit: the mixed Adam step is
    the Adam step on sum_k w_k g_k (formed in float32 as w_0 g_0 + w_1 g_1 + ...); the base
    update is m_b b3 + (1-b3) sum_k w_k g_k and v_b b4 + (1-b4) sum_k w_k g_k^2; the delta step
    is the bridged step that leaves the base as it was."""
    n = 70001  # several chunks and pieces, a partial block at the end
    gen = torch.Generator().manual_seed(7)
    grads = [torch.randn(n, generator=gen) * s for s in (1e-2, 3e-2, 5e-3)]
    weights = [0.2, 0.5, 0.3]
    w32 = [float(torch.tensor(w, dtype=torch.float32)) for w in weights]
    mixed = grads[0] * w32[0]
    mixed2 = (grads[0] * grads[0]) * w32[0]
    for g, w in zip(grads[1:], w32[1:]):
        mixed = mixed + g * w
        mixed2 = mixed2 + (g * g) * w

    def buffers(count, seed):
        g = torch.Generator().manual_seed(seed)
        values = [torch.randn(n, generator=g) * 1e-3 for _ in range(count)]
        values[1] = values[1].abs()  # a true second moment
        if storage == "fp32":
            return values, [native.f32_buffer(v) for v in values]
        qmaps = [get_map(signed=i != 1) for i in range(count)]
        parts = [quantize_blockwise(v, q, 256) for v, q in zip(values, qmaps)]
        return parts, [native.int8_buffer(c, a, q, 256) for (c, a), q in zip(parts, qmaps)]

    def snapshot(state):
        return [t.clone() for item in state for t in (item if isinstance(item, tuple) else
                                                      (item,))]

    adam = adam_scalar_values(decay=0.99, lr=1e-3, betas=(0.9, 0.95), step=5, eps=1e-8)
    p0 = torch.randn(n, generator=gen)
    p1, p2 = p0.clone(), p0.clone()
    s1, b1 = buffers(2, 1)
    s2, b2 = buffers(2, 1)
    assert native.step_mixed(lib, "adam", p1, grads, weights, b1, adam)
    assert native.step(lib, "adam", p2, mixed, b2, adam)
    assert torch.equal(p1, p2)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(s1), snapshot(s2)))

    bridged = bridged_scalar_values(decay=1.0, lr=1e-3, betas=(0.9, 0.95),
                                    base_betas=(0.9, 0.99), T=6, t_k=3, eps=1e-8,
                                    guard_u=8 * 2.0**-24, bound=math.inf)
    state, bufs = buffers(2, 2)
    before = snapshot(state)
    assert native.step_mixed(lib, "base", None, grads, weights, bufs, bridged)
    if storage == "fp32":
        b3, b4 = torch.tensor(0.9), torch.tensor(0.99)
        one = torch.tensor(1.0)
        assert torch.equal(state[0], before[0] * b3 + mixed * (one - b3))
        assert torch.equal(state[1], before[1] * b4 + mixed2 * (one - b4))
    else:  # the same, through the codec: decode, update, encode as the torch code does
        for (codes, absmax), old, mix, beta, signed in (
                (state[0], before[:2], mixed, 0.9, True),
                (state[1], before[2:], mixed2, 0.99, False)):
            q = get_map(signed)
            value = dequantize_blockwise(old[0], old[1], q, 256)
            beta32 = torch.tensor(beta)
            want = quantize_blockwise(value * beta32 + mix * (torch.tensor(1.0) - beta32), q,
                                      256)
            assert torch.equal(codes, want[0]) and torch.equal(absmax, want[1])

    state, bufs = buffers(4, 3)
    before = snapshot(state)
    p3 = p0.clone()
    assert native.step(lib, "delta", p3, grads[0], bufs, bridged)
    after = snapshot(state)
    base_parts = 2 if storage == "fp32" else 4
    assert all(torch.equal(a, b) for a, b in zip(after[:base_parts], before[:base_parts]))
    state_ref, bufs_ref = buffers(4, 3)
    p4 = p0.clone()
    assert native.step(lib, "bridged", p4, grads[0], bufs_ref, bridged)
    assert torch.equal(p3, p4)  # the same step, apart from the base update
    assert all(torch.equal(a, b) for a, b in zip(after[base_parts:],
                                                 snapshot(state_ref)[base_parts:]))


def _hard_values(n_blocks, block, seed):
    """Blocks whose values sit on, just above and just below the map's midpoints times the
    block scale, plus zeros, subnormals, -0.0 and tiny values; scales over many decades."""
    gen = torch.Generator().manual_seed(seed)
    mids = get_map(True).midpoints
    blocks = []
    for _ in range(n_blocks):
        scale = float(10.0 ** torch.empty(1).uniform_(-30, 30, generator=gen))
        pick = mids[torch.randint(0, mids.numel(), (block,), generator=gen)]
        x = pick * scale
        nudge = torch.randint(-1, 2, (block,), generator=gen).float()
        x = torch.where(nudge > 0, torch.nextafter(x, torch.tensor(math.inf)), x)
        x = torch.where(nudge < 0, torch.nextafter(x, torch.tensor(-math.inf)), x)
        x[0] = scale  # the block maximum
        x[1:4] = torch.tensor([0.0, -0.0, 1e-45])
        x[4] = scale * 1e-35
        blocks.append(x)
    for scale in EXTREME_SCALES:  # subnormal to the largest float, range ends included
        pick = mids[torch.randint(0, mids.numel(), (block,), generator=gen)]
        x = pick.double() * scale
        x[0] = scale
        blocks.append(x.float())
    return torch.cat(blocks)


@pytest.mark.parametrize("block", [256, 64, 100])
@pytest.mark.parametrize("signed", [True, False])
def test_codec_equals_torch_codec(block, signed, lib):
    qmap = get_map(signed)
    x = torch.cat([_hard_values(40, block, seed=block), torch.randn(10_007) * 3e-4])
    if not signed:
        x = x.abs()
    want_codes, want_absmax = quantize_blockwise(x, qmap, block)
    codes = torch.empty_like(want_codes)
    absmax = torch.empty_like(want_absmax)
    assert native.encode(lib, x, codes, absmax, qmap, block)
    assert torch.equal(absmax, want_absmax)
    assert torch.equal(codes, want_codes)
    out = native.decode(lib, codes, absmax, qmap, block, torch.empty_like(x))
    assert torch.equal(out, dequantize_blockwise(codes, absmax, qmap, block))


def test_codec_on_non_finite_blocks(lib):
    qmap = get_map(True)
    x = torch.randn(1024)
    x[3], x[300], x[301], x[600] = math.nan, math.inf, -math.inf, -math.nan
    want_codes, want_absmax = quantize_blockwise(x, qmap, 256)
    codes, absmax = torch.empty_like(want_codes), torch.empty_like(want_absmax)
    assert native.encode(lib, x, codes, absmax, qmap, 256)
    assert torch.equal(codes, want_codes)
    assert torch.equal(absmax.isnan(), want_absmax.isnan())
    assert torch.equal(absmax.nan_to_num(), want_absmax.nan_to_num())


@pytest.mark.parametrize("n", [1, 17, 65_536, 200_003])
def test_all_finite(n, lib):
    x = torch.randn(n)
    x[0] = 1e-45  # subnormals and the largest finite float are finite
    x[-1] = torch.finfo(torch.float32).max
    assert native.all_finite(lib, x)
    # Every lane of the vector loop's four accumulators, the last vector block, the tail.
    body = n - n % 256
    places = {0, 17, 33, 49, 63, 255, n // 2, body - 1, n - 1}
    for at in sorted(p for p in places if 0 <= p < n):
        for bad in (math.nan, math.inf, -math.inf):
            y = x.clone()
            y[at] = bad
            assert not native.all_finite(lib, y), (at, bad)


def test_optimizer_refuses_nonfinite_through_the_native_scan(lib, monkeypatch):
    monkeypatch.setenv("MOOPT_NATIVE", "sync")
    p = torch.nn.Parameter(torch.ones(70_000))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", "int8", lr=0.1,
                                        nonfinite="raise")
    p.grad = torch.ones(70_000)
    opt.step(objective="a")
    before = {k: v.clone() if isinstance(v, torch.Tensor) else v
              for k, v in opt.state[p].items()}
    p.grad[12_345] = math.inf
    with pytest.raises(moopt.NonFiniteGradientError):
        opt.step(objective="b")
    for key, value in opt.state[p].items():
        assert torch.equal(value, before[key]) if isinstance(value, torch.Tensor) \
            else value == before[key]


def test_declines_mixed_block_sizes(lib):
    """Two 8-bit buffers with different block sizes cannot share chunks: the kernel says so
    and writes nothing."""
    p, g, (m, v) = _direct("adam", n=1024)
    q = get_map(True)
    codes = [torch.zeros(1024, dtype=torch.uint8) for _ in range(2)]
    scales = [torch.zeros(4), torch.zeros(16)]
    bufs = [native.int8_buffer(codes[0], scales[0], q, 256),
            native.int8_buffer(codes[1], scales[1], q, 64)]
    before = p.clone()
    s = adam_scalar_values(decay=1.0, lr=1e-3, betas=(0.9, 0.95), step=1, eps=1e-8)
    assert not native.step(lib, "adam", p, g, bufs, s)
    assert torch.equal(p, before)


def test_build_failure_warns_and_falls_back(monkeypatch):
    loader = native._Loader()

    def broken():
        raise RuntimeError("no C compiler found (set CC)")

    monkeypatch.setattr(native, "_build", broken)
    with pytest.warns(RuntimeWarning, match="native CPU kernels are unavailable"):
        assert loader.get(sync=True) is None
    assert "no C compiler" in str(loader.failed)


def test_background_build_returns_none_then_the_library(monkeypatch, lib):
    loader = native._Loader()
    release = __import__("threading").Event()

    def slow_build():
        release.wait(10)
        return lib

    monkeypatch.setattr(native, "_build", slow_build)
    monkeypatch.setattr(native, "_already_built", lambda: False)
    assert loader.get(sync=False) is None  # the first request never waits for a build
    release.set()
    loader.thread.join(10)
    assert loader.get(sync=False) is lib


def test_a_built_library_is_loaded_by_the_first_request(monkeypatch, lib, tmp_path):
    # The module fixture built it into the default cache: that is a cache hit.
    assert native._already_built()
    loader = native._Loader()
    assert loader.get(sync=False) is not None and loader.thread is None
    # An empty cache is not: the first request starts the build in the background.
    monkeypatch.setenv("MOOPT_CACHE_DIR", str(tmp_path))
    assert not native._already_built()


def test_off_mode_never_loads(monkeypatch):
    monkeypatch.setenv("MOOPT_NATIVE", "0")
    assert native.mode() == "off" and native.library() is None


def test_cache_key_follows_source_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("MOOPT_CACHE_DIR", str(tmp_path))
    cc = native._compiler()
    assert cc is not None
    a = native._library_path(cc, native.FLAGS)
    b = native._library_path(cc, native.FLAGS + ["-DX"])
    assert a != b and a.parent == tmp_path / "native"


@pytest.mark.skipif(__import__("platform").machine() not in ("x86_64", "AMD64"),
                    reason="the instruction-set variants below are x86 ones")
@pytest.mark.parametrize("arch", ["-march=x86-64-v3", "-march=x86-64"],
                         ids=["avx2", "portable"])
def test_other_instruction_sets(arch, tmp_path):
    """The AVX2 and the portable code paths (this machine may take the AVX-512 one): the
    codec and step tests above, in a process whose library is built for ``arch``."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, MOOPT_NATIVE_ARCH=arch, MOOPT_NATIVE="sync",
               MOOPT_CACHE_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
         "-k", "codec or equals_torch or all_finite"],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "passed" in done.stdout
    assert list((tmp_path / "native").glob("*.so"))  # built here, for this arch


@pytest.mark.parametrize("storage", ["fp32", "int8", "bf16"])
def test_cached_buffers_follow_load_state_dict(storage, lib, monkeypatch):
    """The kernel's buffer arrays are cached per parameter; loading a state dict puts new
    tensors in the state, and the next step must update those (not the old ones)."""
    def go(use_native):
        monkeypatch.setenv("MOOPT_NATIVE", "sync" if use_native else "0")
        gen = torch.Generator().manual_seed(5)
        p = torch.nn.Parameter(torch.randn(9000, generator=gen))
        opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", storage, lr=1e-2)
        grads = [torch.randn(9000, generator=gen) for _ in range(6)]
        for i in range(3):
            p.grad = grads[i]
            opt.step(objective="ab"[i % 2])
        saved = opt.state_dict()
        p.grad = grads[3]
        opt.step(objective="a")  # moves the state away from what was saved...
        opt.load_state_dict(saved)  # ...and back, in new tensors
        with torch.no_grad():
            p.copy_(torch.randn(9000, generator=torch.Generator().manual_seed(6)))
        for i in range(4, 6):
            p.grad = grads[i]
            opt.step(objective="ab"[i % 2])
        return p.detach().clone(), opt.state_dict()["state"]

    got, got_state = go(True)
    want, want_state = go(False)
    assert (got - want).abs().max() <= 4 * EPS32 * want.abs().max()
    for key, value in want_state[0].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got_state[0][key], value), key


def test_cached_buffers_never_point_into_freed_state():
    """A cached array is only reused while every tensor it points into is alive and still in
    the state under its key; a dead tensor whose key is gone must not count as a match
    (that once let a new optimizer over the same parameters write into freed memory)."""
    from moopt.states.fast.step import _still_valid

    live = torch.zeros(3)
    dead = torch.zeros(3)
    refs = [("m", weakref.ref(live)), ("v#codes", weakref.ref(dead))]
    assert _still_valid(refs, {"m": live, "v#codes": dead})
    del dead
    assert not _still_valid(refs, {"m": live})  # key gone, reference dead
    assert not _still_valid(refs, {"m": torch.zeros(3), "v#codes": torch.zeros(3)})


@pytest.mark.parametrize("first,second", [("int8", "fp32"), ("fp32", "int8"),
                                          ("bf16", "int8")])
def test_new_optimizer_over_the_same_parameters(first, second, lib, monkeypatch):
    """Optimizers built one after another over the same parameters (as a benchmark or a
    restart does) each step their own state."""
    monkeypatch.setenv("MOOPT_NATIVE", "sync")
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(70_000, generator=gen)) for _ in range(3)]
    for storage in (first, second, first):
        for p in params:
            p.grad = torch.randn(70_000, generator=gen)
        start = [p.detach().clone() for p in params]
        opt = moopt.MultiObjectiveOptimizer(params, ["a", "b"], "bridged", storage, lr=0.1)
        opt.step(objective="a")
        for p, p0 in zip(params, start):
            # A first bridged step moves every coordinate by lr (the Adam bound at t = 1).
            assert torch.allclose((p0 - p.detach()).abs(), torch.full_like(p0, 0.1), rtol=0.02)
        del opt
