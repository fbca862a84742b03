"""The native CPU kernels (moopt/states/fast/native.c): codec, scan, build, argument tables.

Their steps are held to the fused path of every built-in policy and storage by
tests/states/test_contract.py (states bit for bit, parameters within an ulp per step: the C
square root is correctly rounded, torch's vectorised one not always). Here: the 8-bit codec
against the torch codec, the NaN/inf scan, threads, the synchronous build and its cache, and
the argument tables generated from the declarations.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

import moopt
from moopt.states.bridged import BridgedPolicy
from moopt.states.fast import native, native_tables
from moopt.states.fast.fused import fused_function
from moopt.states.fast.native_step import _still_valid
from moopt.states.int8 import Int8Storage
from moopt.states.policy import SAMPLE_INFO
from moopt.states.quantization import dequantize_blockwise, get_map, quantize_blockwise
from moopt.states.rule import Rule
from moopt.states.storage import PLAIN
from tests.states.test_quantization import EXTREME_SCALES

EPS32 = torch.finfo(torch.float32).eps
BUILTIN = sorted(cls.name for cls in native_tables.KERNELS)


@pytest.fixture(scope="module")
def lib():
    # A C compiler is part of this project's supported setup (torch.compile needs one too):
    # a failing build is a failure here, not a skip.
    library = native.library() if native.mode() != "off" else native._build()
    assert library is not None, f"native kernels did not build: {native.failure()}"
    return library


SHAPES = [(300, 257), (5000,), (7,), (64, 3)]
# Enough small tensors (80 000 values) for moopt_step_many to share them among threads.
MANY_SMALL = [(40, 50), (2000,), (1,), (33, 3)] * 20


def run(policy, storage, *, use_native, monkeypatch, steps=6, threads=1, seed=0,
        joint=False, shapes=SHAPES):
    monkeypatch.setenv("MOOPT_NATIVE", "sync" if use_native else "0")
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
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


# Blocks smaller and larger than the kernel's pieces, and mixed storages with and without
# 8-bit buffers (bf16 + fp32 goes through scratch without block maxima).
STORAGES = ["fp32", "bf16", "int8", Int8Storage(block_size=64, min_size=0),
            Int8Storage(block_size=100, min_size=0), Int8Storage(block_size=1024, min_size=0),
            {"base": "fp32", "delta": "int8"}, {"base": "int8", "delta": "bf16"},
            {"base": "bf16", "delta": "fp32"}]


@pytest.mark.parametrize("shapes", [SHAPES, MANY_SMALL], ids=["mixed", "many-small"])
@pytest.mark.parametrize("joint", [False, True], ids=["alternating", "joint"])
@pytest.mark.parametrize("storage", STORAGES, ids=repr)
@pytest.mark.parametrize("policy", BUILTIN)
def test_native_step_equals_eager_kernels(policy, storage, joint, shapes, lib, monkeypatch):
    """Block sizes and per-role mixes beyond the contract suite's (and the check the other
    instruction sets run, below), on a few tensors and on many small ones (stepped side by
    side on torch's threads)."""
    fast, opt_fast = run(policy, storage, use_native=True, monkeypatch=monkeypatch,
                         joint=joint, shapes=shapes)
    ref, opt_ref = run(policy, storage, use_native=False, monkeypatch=monkeypatch,
                       joint=joint, shapes=shapes)
    assert {e["path"] for e in opt_fast.kernel_report()} == {"native"}
    for a, b in zip(fast, ref):
        assert (a - b).abs().max() <= 6 * 2 * EPS32 * b.detach().abs().max()
        sa, sb = opt_fast.state[a], opt_ref.state[b]
        assert sa.keys() == sb.keys()
        for key in sa:
            if isinstance(sa[key], torch.Tensor):
                assert torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key]


@pytest.mark.parametrize(("storage", "block"), [
    ("fp32", None), ("int8", 256), ("fp8", 256), (Int8Storage(block_size=100, min_size=0), 100)],
    ids=repr)
@pytest.mark.parametrize("policy", BUILTIN)
def test_nonfinite_gradients_reach_the_state_as_in_the_eager_kernels(policy, storage, block,
                                                                      lib, monkeypatch):
    """Unchecked steps (the default) carry NaN and inf gradients into the 8-bit state: the
    native kernels mark the same blocks NaN or infinite as the eager kernels and give the
    same codes in every other block (a NaN block's codes follow its NaN's sign and payload,
    which each instruction set propagates its own way). With float32 state each -1e38 also
    meets bridged's guard at its edge: its square overflows v_base to +inf, so that the next
    step's delta radicand is |-inf + inf| = NaN against a floor of +inf, and the parameter
    turns NaN there (torch.maximum), in a vector loop and in a scalar tail; the NaN
    parameters are compared after every step."""
    def go(use_native):
        monkeypatch.setenv("MOOPT_NATIVE", "sync" if use_native else "0")
        monkeypatch.setenv("MOOPT_COMPILE", "0")
        gen = torch.Generator().manual_seed(9)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in (70_003, 300)]
        opt = moopt.MultiObjectiveOptimizer(params, ["a", "b"], policy, storage, lr=1e-2,
                                            weight_decay=0.1)
        nan_after = []  # each step's NaN parameters (later steps spread NaN further)
        for i in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            if i == 1:  # a vector's lane, a block's odd tail, another block, both tensors
                bad = params[0].grad
                bad[5], bad[70_001], bad[1000], bad[1001] = math.nan, math.nan, math.inf, -1e38
                params[1].grad[299], params[1].grad[290] = -math.inf, -1e38  # a scalar tail
            opt.step(objective="ab"[i % 2])
            nan_after.append([p.isnan() for p in params])
        return params, opt, nan_after
    fast, opt_fast, fast_nan = go(True)
    ref, opt_ref, ref_nan = go(False)
    assert {e["path"] for e in opt_fast.kernel_report()} == {"native"}
    for step, (got, want) in enumerate(zip(fast_nan, ref_nan)):
        for a, b in zip(got, want):
            assert torch.equal(a, b), f"step {step}"
    nan_blocks = 0
    for a, b in zip(fast, ref):
        assert torch.equal(a.isnan(), b.isnan())
        assert a.isnan().any()
        finite = ~a.isnan()
        assert (a[finite] - b[finite]).abs().max() <= 8 * EPS32 * b[finite].abs().max()
        state, want_state = opt_fast.state[a], opt_ref.state[b]
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                continue
            want = want_state[key]
            if key.endswith("#codes"):
                absmax = state[key.replace("#codes", "#absmax")]
                kept = (~absmax.isnan()).repeat_interleave(block)[:value.numel()]
                nan_blocks += int((~kept).any())
                assert torch.equal(value.flatten()[kept], want.flatten()[kept]), key
            else:
                assert torch.equal(value.isnan(), want.isnan()), key
                assert torch.equal(value.nan_to_num(), want.nan_to_num()), key
    if block is not None:
        assert nan_blocks  # some block did turn NaN


@pytest.mark.parametrize("shapes", [SHAPES, MANY_SMALL], ids=["mixed", "many-small"])
@pytest.mark.parametrize("storage", ["int8", "fp32"])
@pytest.mark.parametrize("joint", [False, True], ids=["alternating", "joint"])
@pytest.mark.parametrize("policy", BUILTIN)
def test_threads_do_not_change_results(policy, joint, storage, shapes, lib, monkeypatch):
    """(fp32 joint steps of two objectives take the pair loops, int8 ones the piece driver;
    many small tensors are shared among the threads.)"""
    threads = torch.get_num_threads()
    try:
        one, _ = run(policy, storage, use_native=True, monkeypatch=monkeypatch, threads=1,
                     joint=joint, shapes=shapes)
        two, opt = run(policy, storage, use_native=True, monkeypatch=monkeypatch, threads=2,
                       joint=joint, shapes=shapes)
        assert {e["path"] for e in opt.kernel_report()} == {"native"}
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


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
    and writes nothing (the fused path takes such a step)."""
    n = 1024
    p, g = torch.randn(n), torch.randn(n)
    q = get_map(True)
    codes = [torch.zeros(n, dtype=torch.uint8) for _ in range(2)]
    scales = [torch.zeros(4), torch.zeros(16)]
    bufs = [native.int8_buffer(codes[0], scales[0], q, 256),
            native.int8_buffer(codes[1], scales[1], q, 64)]
    before = p.clone()
    rule = Rule.of(moopt.get_policy("shared"), 1)
    scalars = rule.scalars(("a",), [1.0], [1e-3], 0.0, lambda k: SAMPLE_INFO)
    assert not native.step(lib, "shared", p, [g], bufs, scalars)
    assert torch.equal(p, before)


def _bridged_tensors(n, kind, gen):
    """Bridged state of ``n`` values, slot order m_base, v_base, m, v: four float32
    tensors, or (codes, absmax) pairs of 256-value blocks."""
    values = [torch.randn(n, generator=gen) * 1e-2, torch.rand(n, generator=gen) * 1e-4,
              torch.randn(n, generator=gen) * 1e-3, torch.randn(n, generator=gen) * 1e-5]
    if kind == "fp32":
        return values
    return [t for k, v in enumerate(values)
            for t in quantize_blockwise(v, get_map(k != 1), block_size=256)]


def _bridged_bufs(tensors, kind):
    if kind == "fp32":
        return [native.f32_buffer(t) for t in tensors]
    return [native.int8_buffer(tensors[2 * k], tensors[2 * k + 1], get_map(k != 1), 256)
            for k in range(4)]


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_one_call_for_many_tensors_equals_one_call_each(kind, lib):
    """moopt_step_many (small tensors side by side on two threads, large ones one after
    another) leaves every parameter and buffer as one moopt_step call per tensor does, and a
    tensor it declines (8-bit buffers of different block sizes) unchanged."""
    gen = torch.Generator().manual_seed(3)
    sizes = [1, 7, 64, 100, 257, 1000, 70_000, 3] + [4000 + 97 * i for i in range(20)]
    rule = Rule.of(moopt.get_policy("bridged"), 1)
    scalars = native.scalar_array(list(
        rule.scalars(("a",), [1.0], [1e-3], 0.1, lambda k: SAMPLE_INFO)))
    params = [torch.randn(n, generator=gen) for n in sizes]
    grads = [torch.randn(n, generator=gen) for n in sizes]
    states = [_bridged_tensors(n, kind, gen) for n in sizes]
    initial = [p.clone() for p in params]
    twins = [p.clone() for p in params]
    twin_states = [[t.clone() for t in tensors] for tensors in states]
    bufs = [_bridged_bufs(tensors, kind) for tensors in states]
    twin_bufs = [_bridged_bufs(tensors, kind) for tensors in twin_states]
    odd = 4  # declined with int8 state: its m_base buffer claims 64-value blocks
    if kind == "int8":
        bufs[odd][0].block = twin_bufs[odd][0].block = 64
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        done = native.step_many(lib, "bridged", params, [[g] for g in grads],
                                [native.buffer_array(b) for b in bufs],
                                [scalars] * len(sizes))
        torch.set_num_threads(1)
        alone = [native.step(lib, "bridged", p, [g], b, scalars)
                 for p, g, b in zip(twins, grads, twin_bufs)]
    finally:
        torch.set_num_threads(threads)
    assert done == alone
    assert done == [kind == "fp32" or i != odd for i in range(len(sizes))]
    for i in range(len(sizes)):
        assert torch.equal(params[i], twins[i])
        assert all(torch.equal(a, b) for a, b in zip(states[i], twin_states[i]))
        assert torch.equal(params[i], initial[i]) == (not done[i])


@pytest.mark.parametrize("unit_roundoff", [2.0**-24, 2.0**-8], ids=["unbounded", "bounded"])
@pytest.mark.parametrize("base_betas", [None, (0.8, 0.99)], ids=["same-base", "other-base"])
def test_bridged_joint_pair_loop_equals_the_eager_rule(unit_roundoff, base_betas, lib):
    """The float32 joint loop of two objectives computes the base's products once when both
    terms carry the same base coefficients (as the optimizer's always do) and skips the clip
    of an infinite bound (float32 state). Here also with other base coefficients in the
    second term and with a finite bound (the unit roundoff of lossy storage): every variant
    equals the eager rule bit for bit, NaN and inf gradients included."""
    gen = torch.Generator().manual_seed(11)
    n = 3000
    rule = Rule.of(moopt.get_policy("bridged"), 2)

    def info(k):
        other = base_betas if k == "b" and base_betas else SAMPLE_INFO.base_betas
        return dataclasses.replace(SAMPLE_INFO, objective=k, unit_roundoff=unit_roundoff,
                                   base_betas=other)

    values = rule.scalars(("a", "b"), [0.25, 0.75], [1e-2, 3e-2], 0.1, info)
    grads = [torch.randn(n, generator=gen) * 1e-2, torch.randn(n, generator=gen)]
    grads[0][:3] = torch.tensor([math.nan, math.inf, -math.inf])
    grads[1][5] = math.nan
    # m_base, v_base, then each objective's m and v (v_k may be negative)
    state = [torch.randn(n, generator=gen) * 1e-2, torch.rand(n, generator=gen) * 1e-4,
             torch.randn(n, generator=gen) * 1e-3, torch.randn(n, generator=gen) * 1e-5,
             torch.randn(n, generator=gen) * 1e-3, torch.randn(n, generator=gen) * 1e-5]
    p = torch.randn(n, generator=gen)
    p_ref, state_ref = p.clone(), [t.clone() for t in state]
    assert native.step(lib, "bridged", p, grads, [native.f32_buffer(t) for t in state],
                       native.scalar_array(list(values)))
    step = fused_function(rule, [PLAIN] * len(state))
    step(p_ref, grads, [[t] for t in state_ref], [()] * len(state),
         torch.tensor(values, dtype=torch.float32))
    assert torch.equal(p.isnan(), p_ref.isnan()) and p.isnan().any()
    finite = ~p_ref.isnan()
    # parameters within an ulp per step (torch's vectorised square root), states bit for bit
    assert (p - p_ref)[finite].abs().max() <= 2 * EPS32 * p_ref[finite].abs().max()
    for got, want in zip(state, state_ref):
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got[~want.isnan()], want[~want.isnan()])


def test_mixed_block_sizes_take_the_fused_path(monkeypatch):
    monkeypatch.setenv("MOOPT_NATIVE", "sync")
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    storage = {"base": Int8Storage(block_size=256, min_size=0),
               "delta": Int8Storage(block_size=64, min_size=0)}
    p = torch.nn.Parameter(torch.randn(2048))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", storage, lr=1e-2)
    p.grad = torch.randn(2048)
    opt.step(objective="a")
    assert [e["path"] for e in opt.kernel_report()] == ["eager"]


def test_build_failure_warns_and_falls_back(monkeypatch):
    loader = native._Loader()

    def broken():
        raise RuntimeError("no C compiler found (set CC)")

    monkeypatch.setattr(native, "_build", broken)
    with pytest.warns(RuntimeWarning, match="native CPU kernels are unavailable"):
        assert loader.get() is None
    assert "no C compiler" in str(loader.failed)
    assert loader.get() is None  # decided once: every later step takes the same kernels


def test_first_request_builds_before_it_returns(monkeypatch, tmp_path):
    """No background build: the first request on an empty cache returns the library."""
    monkeypatch.setenv("MOOPT_CACHE_DIR", str(tmp_path))
    loader = native._Loader()
    assert loader.get() is not None
    assert list((tmp_path / "native").glob("*.so"))


FIRST_RUN = """
import hashlib, torch, moopt
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 8))
opt = moopt.MultiObjectiveOptimizer(model.parameters(), ["f", "r"], "bridged", "int8", lr=1e-2)
x = torch.randn(32, 64)
for i in range(6):
    loss = model(x).pow(2).mean() * (-1 if i % 3 == 0 else 1)
    loss.backward(); opt.step(objective="f" if i % 3 == 0 else "r"); opt.zero_grad()
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()))
      .hexdigest(), {e["path"] for e in opt.kernel_report()})
"""


def test_first_run_on_an_empty_cache_equals_a_warm_run(tmp_path):
    """Same seed, same settings: the run that builds the kernels and the one that finds them
    in the cache step the same kernels from the first step (bit-identical parameters)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOOPT_")}
    env.update(MOOPT_CACHE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    outputs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", FIRST_RUN], env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout.strip().splitlines()[-1])
    assert outputs[0] == outputs[1]
    assert "native" in outputs[0]


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
    run_tests_built_for(arch, tmp_path, [__file__],
                        "codec or all_finite or (equals_eager and bridged and int8)")


def run_tests_built_for(arch: str, cache: Path, files: list[str], select: str) -> None:
    """Run the tests of ``files`` that ``select`` (pytest -k) picks in a fresh process whose
    native library is built for ``arch`` (MOOPT_NATIVE_ARCH) into ``cache``; they must pass."""
    env = dict(os.environ, MOOPT_NATIVE_ARCH=arch, MOOPT_NATIVE="sync", MOOPT_COMPILE="0",
               MOOPT_CACHE_DIR=str(cache))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m",
         "not slow", *files, "-k", select],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
    assert list((cache / "native").glob("*.so"))  # built here, for this arch


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


class ReorderedBridged(BridgedPolicy):
    """Bridged with its coefficients in reverse order and its per-objective buffers
    declared first: the same math, other argument tables."""

    buffers = (BridgedPolicy.buffers[2], BridgedPolicy.buffers[3],
               BridgedPolicy.buffers[0], BridgedPolicy.buffers[1])

    def coefficients(self, info):
        return dict(reversed(list(super().coefficients(info).items())))


def test_argument_tables_follow_the_declaration(monkeypatch, tmp_path):
    """Build the library with the tables of a reordered bridged declaration: its native steps
    equal its eager fused steps, bit for bit in the states (the C code reads coefficients and
    buffers by the names the declaration places)."""
    moopt.register_policy("bridged_reordered", overwrite=True)(ReorderedBridged)
    kernels = {**native_tables.KERNELS}
    kernels.pop(BridgedPolicy)
    kernels[ReorderedBridged] = "bridged"
    monkeypatch.setattr(native_tables, "KERNELS", kernels)
    native_tables.build_flags.cache_clear()
    monkeypatch.setenv("MOOPT_CACHE_DIR", str(tmp_path))
    try:
        flags = native_tables.build_flags()
        assert "-DBRIDGED_C_bound=1" in flags and "-DBRIDGED_S_m_base=0" in flags
        monkeypatch.setattr(native, "_loader", native._Loader())
        fast, opt_fast = run("bridged_reordered", "int8", use_native=True,
                             monkeypatch=monkeypatch, joint=True)
        ref, opt_ref = run("bridged_reordered", "int8", use_native=False,
                           monkeypatch=monkeypatch, joint=True)
    finally:
        native_tables.build_flags.cache_clear()
        moopt.states.policy.POLICIES.unregister("bridged_reordered")
    assert {e["path"] for e in opt_fast.kernel_report()} == {"native"}
    for a, b in zip(fast, ref):
        assert (a - b).abs().max() <= 6 * 2 * EPS32 * b.detach().abs().max()
        for key, value in opt_ref.state[b].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(opt_fast.state[a][key], value), key


def test_a_declaration_missing_a_name_the_kernel_reads_is_named():
    class NoGuard(BridgedPolicy):
        def coefficients(self, info):
            values = super().coefficients(info)
            values.pop("guard_u")
            return values

    with pytest.raises(ValueError, match="guard_u"):
        native_tables.policy_flags(NoGuard(), "bridged")


def test_subclasses_of_builtin_policies_take_the_fused_path(monkeypatch):
    """A subclass may change the math, so the native kernels never take it."""
    monkeypatch.setenv("MOOPT_COMPILE", "0")

    class Halved(BridgedPolicy):
        def update(self, grad, state, coef):
            direction, new = super().update(grad, state, coef)
            return direction * 0.5, new

    p = torch.nn.Parameter(torch.ones(4))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], Halved(), lr=0.1)
    p.grad = torch.ones(4)
    opt.step(objective="a")
    assert [e["path"] for e in opt.kernel_report()] == ["eager"]
    assert torch.allclose(p.detach(), torch.full((4,), 0.95))
