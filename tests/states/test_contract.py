"""The contract every registered policy and storage backend meets, on every path.

Parametrised over ``list_policies()`` plus a toy policy this file registers itself, and
``list_storages()`` plus per-role and non-default backend settings, in alternating and joint
mode. New registrations are covered without editing this file. What each test holds:

* eager fused path == reference path, bit for bit (parameters and states), every storage:
  the fused function derived from the declaration runs the reference path's operations;
* native kernels (built-in policies) == eager fused path: states bit for bit, parameters
  within 2 float32 ulps of their scale per step (the C square root is correctly rounded,
  torch's vectorised one not always);
* state_dict round trip, then training in lockstep: identical bits;
* memory_report: the bytes the declaration and the storage allocate, by role and objective;
* DTensor shards (a 1-rank gloo mesh): the same bits as plain tensors;
* ``nonfinite="raise"``: a NaN raises and changes nothing;
* compiled == eager: one real compile here (the toy policy); the full matrix is in the slow
  suite (inductor takes seconds to a minute per kernel on a CPU).
"""

from __future__ import annotations

import io
import math

import pytest
import torch

import moopt
from moopt.states.bf16 import BF16Storage
from moopt.states.fp8 import Fp8Storage
from moopt.states.int8 import Int8Storage
from moopt.states.layout import buffer_of
from moopt.states.storage import get_storage
from tests.states.toy_policy import NATIVE, POLICY_NAMES

EPS32 = torch.finfo(torch.float32).eps
OBJECTIVES = ["a", "b", "c"]


STORAGE_SPECS = [*moopt.list_storages(), {"base": "fp32", "delta": "int8"},
                 Int8Storage(block_size=64, min_size=0), BF16Storage(stochastic_rounding=True),
                 Fp8Storage(block_size=64, min_size=0, mantissa_bits=4)]


def kernels(monkeypatch, *, native: bool, compile_: bool = False) -> None:
    monkeypatch.setenv("MOOPT_NATIVE", "sync" if native else "0")
    monkeypatch.setenv("MOOPT_COMPILE", "1" if compile_ else "0")


def make_params(seed=0, dtype=torch.float32, big=(96, 97)):
    """Parameters of the kinds the paths treat differently: 8-bit-quantized sizes (at least
    4,096 values), small ones (grouped into one call, kept fp32 by int8), a non-contiguous
    one; ``big`` >= 65,536 values makes one its own (compiled) call."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [big, (5000,), (7,), (64, 3)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    # A non-contiguous parameter (a transposed view).
    params.append(torch.nn.Parameter(torch.randn(20, 30, generator=gen, dtype=dtype).t()))
    return params


def train(policy, storage, params, *, joint, steps=4, seed=1, fast=True, opt=None, **kw):
    """Alternating a, b, b, c, b, a... or joint steps where parameter 2 gets no gradient from
    "c" and weights differ."""
    if opt is None:
        opt = moopt.MultiObjectiveOptimizer(params, OBJECTIVES, policy, storage, lr=1e-2,
                                            weight_decay=0.1, lr_ratios={"a": 0.5},
                                            fast_path=fast, **kw)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # bf16 stochastic rounding draws from the global generator
    for i in range(steps):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype)
                 * 10.0 ** float(torch.randint(-4, 1, (1,), generator=gen)) for p in params]
        if joint:
            for j, k in enumerate(OBJECTIVES):
                for n, (p, g) in enumerate(zip(params, grads)):
                    p.grad = None if (k == "c" and n == 2) else g * (1.0, -0.5, 2.0)[j]
                opt.stash_grads(k)
            opt.step(weights={"a": 1.0, "b": 3.0, "c": 0.5})
        else:
            for p, g in zip(params, grads):
                p.grad = g
            opt.step(objective="abbcba"[i % 6])
    return opt


def states_equal(opt_a, opt_b, params_a, params_b):
    for pa, pb in zip(params_a, params_b):
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert sa.keys() == sb.keys()
        for key in sa:
            if isinstance(sa[key], torch.Tensor):
                assert torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key], key


def storage_id(spec):
    return spec if isinstance(spec, str) else repr(spec)


MODES = pytest.mark.parametrize("joint", [False, True], ids=["alternating", "joint"])
ALL = [pytest.mark.parametrize("storage", STORAGE_SPECS, ids=storage_id),
       pytest.mark.parametrize("policy", POLICY_NAMES, indirect=True), MODES]


def _all(fn):
    for mark in ALL:
        fn = mark(fn)
    return fn


@_all
def test_eager_fused_equals_reference_bit_for_bit(policy, storage, joint, monkeypatch):
    kernels(monkeypatch, native=False)
    fused, ref = make_params(), make_params()
    opt_fused = train(policy, storage, fused, joint=joint)
    opt_ref = train(policy, storage, ref, joint=joint, fast=False)
    for a, b in zip(fused, ref):
        assert torch.equal(a, b)
    states_equal(opt_fused, opt_ref, fused, ref)
    paths = {e["path"] for e in opt_fused.kernel_report()}
    takes_codec = not (isinstance(storage, BF16Storage) and storage.stochastic_rounding)
    assert paths == ({"eager"} if takes_codec else {"reference"})


@_all
def test_native_kernels_equal_the_fused_path(policy, storage, joint, monkeypatch):
    kernels(monkeypatch, native=False)
    eager = make_params()
    opt_eager = train(policy, storage, eager, joint=joint)
    kernels(monkeypatch, native=True)
    fast = make_params()
    opt_fast = train(policy, storage, fast, joint=joint)
    for a, b in zip(fast, eager):
        assert (a - b).abs().max() <= 4 * 2 * EPS32 * b.abs().max()
    states_equal(opt_fast, opt_eager, fast, eager)
    report = {e["path"]: e for e in opt_fast.kernel_report()}
    stochastic = isinstance(storage, BF16Storage) and storage.stochastic_rounding
    if policy in NATIVE and not stochastic:
        # Contiguous float32 CPU parameters take the native kernels; the transposed one not.
        assert report["native"]["params"] == 4
    else:
        assert "native" not in report


@pytest.mark.parametrize("policy", POLICY_NAMES, indirect=True)
@pytest.mark.parametrize("storage", STORAGE_SPECS, ids=storage_id)
@MODES
def test_state_dict_round_trip_then_lockstep(policy, storage, joint, monkeypatch):
    kernels(monkeypatch, native=True)
    params = make_params()
    opt = train(policy, storage, params, joint=joint, steps=3)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
    clone_opt = moopt.MultiObjectiveOptimizer(clones, OBJECTIVES, policy, storage, lr=1e-2,
                                              weight_decay=0.1, lr_ratios={"a": 0.5})
    clone_opt.load_state_dict(torch.load(buffer, weights_only=True))
    states_equal(opt, clone_opt, params, clones)
    train(policy, storage, params, joint=joint, steps=3, seed=7, opt=opt)
    train(policy, storage, clones, joint=joint, steps=3, seed=7, opt=clone_opt)
    for a, b in zip(params, clones):
        assert torch.equal(a, b)
    states_equal(opt, clone_opt, params, clones)


@pytest.mark.parametrize("policy", POLICY_NAMES, indirect=True)
@pytest.mark.parametrize("storage", STORAGE_SPECS, ids=storage_id)
def test_memory_report_counts_what_the_declaration_allocates(policy, storage, monkeypatch):
    kernels(monkeypatch, native=True)
    params = make_params()
    opt = train(policy, storage, params, joint=False, steps=1)
    report = opt.memory_report()
    backends = opt.storage
    want_total, by_role, by_objective = 0, {}, {}
    for p in params:
        for spec in opt.policy.buffers:
            owners = OBJECTIVES if spec.per_objective else ["shared"]
            for owner in owners:
                parts = backends[spec.role].allocate(p.detach().to("meta"), signed=spec.signed)
                nbytes = sum(t.numel() * t.element_size() for t in parts.values())
                want_total += nbytes
                by_role[spec.role] = by_role.get(spec.role, 0) + nbytes
                by_objective[owner] = by_objective.get(owner, 0) + nbytes
    assert report["total_bytes"] == want_total
    assert {k: v for k, v in report["by_role"].items() if v} == by_role
    assert {k: v for k, v in report["by_objective"].items() if v} == by_objective
    assert report["num_params"] == sum(p.numel() for p in params)
    # Every state tensor is counted under the buffer its key names.
    for state in opt.state.values():
        for key in state:
            if isinstance(state[key], torch.Tensor):
                assert buffer_of(key)[0] in opt.policy.buffer_specs()


@pytest.mark.parametrize("policy", POLICY_NAMES, indirect=True)
@MODES
def test_nonfinite_raise_changes_nothing(policy, joint, monkeypatch):
    kernels(monkeypatch, native=True)
    params = make_params()
    opt = train(policy, "int8", params, joint=joint, steps=2, nonfinite="raise")
    before = [p.detach().clone() for p in params]
    saved = {i: {k: v.clone() if isinstance(v, torch.Tensor) else v
                 for k, v in opt.state[p].items()} for i, p in enumerate(params)}
    for p in params:
        p.grad = torch.ones_like(p)
    params[1].grad[17] = math.nan
    with pytest.raises(moopt.NonFiniteGradientError):
        if joint:
            opt.stash_grads("a")
            opt.step()
        else:
            opt.step(objective="b")
    for i, p in enumerate(params):
        assert torch.equal(p, before[i])
        for key, value in opt.state[p].items():
            same = torch.equal(value, saved[i][key]) if isinstance(value, torch.Tensor) \
                else value == saved[i][key]
            assert same, key


def test_custom_storage_without_a_codec_takes_the_reference_path(monkeypatch):
    kernels(monkeypatch, native=True)
    backend = BF16Storage(stochastic_rounding=True)
    params = make_params()
    opt = train("bridged", backend, params, joint=False, steps=1)
    (entry,) = opt.kernel_report()
    assert entry["path"] == "reference" and entry["params"] == len(params)
    assert "no codec in torch ops" in entry["why"]


def compiled_equals_eager(policy, storage, joint, monkeypatch, big):
    kernels(monkeypatch, native=False)
    eager = make_params(big=big)
    opt_eager = train(policy, storage, eager, joint=joint, steps=3)
    kernels(monkeypatch, native=False, compile_=True)
    fused = make_params(big=big)
    opt_fused = train(policy, storage, fused, joint=joint, steps=3)
    paths = {e["path"] for e in opt_fused.kernel_report()}
    stochastic = isinstance(storage, BF16Storage) and storage.stochastic_rounding
    assert paths == {"reference"} if stochastic else "compiled" in paths
    for a, b in zip(fused, eager):
        assert (a - b).abs().max() <= 3 * 2 * EPS32 * b.abs().max()
    states_equal(opt_fused, opt_eager, fused, eager)


@pytest.mark.parametrize("policy", ["toy"], indirect=True)
def test_compiled_toy_policy_equals_eager(policy, monkeypatch):
    """One real compile in the default run (about 10 s for fp32 on a 2-core CPU; an int8
    kernel takes about a minute to build and is in the slow matrix)."""
    compiled_equals_eager(policy, "fp32", False, monkeypatch, big=(300, 257))


@pytest.mark.slow
@_all
def test_compiled_equals_eager(policy, storage, joint, monkeypatch):
    """Every policy x storage x mode compiled (inductor C++ on this CPU; Triton on CUDA):
    states bit for bit, parameters within 2 ulps per step."""
    compiled_equals_eager(policy, storage, joint, monkeypatch, big=(300, 300))


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["int8", "fp8", Fp8Storage(block_size=64, min_size=0)],
                         ids=storage_id)
@pytest.mark.parametrize("policy", ["bridged", "toy"], indirect=True)
@MODES
def test_compiled_whole_blocks_equal_eager(policy, storage, joint, monkeypatch):
    """Buffers of whole 8-bit blocks (256 x 256 values, large enough to compile) take the
    unpadded row view (quantization._rows) in the compiled graphs: still equal to eager."""
    compiled_equals_eager(policy, storage, joint, monkeypatch, big=(256, 256))


def test_every_registered_storage_is_in_the_matrix():
    for name in moopt.list_storages():
        assert isinstance(get_storage(name), moopt.StorageBackend)
        assert name in STORAGE_SPECS


@pytest.mark.cuda  # skipped without a CUDA device (tests/conftest.py); make device-check
@pytest.mark.parametrize("storage", ["fp32", "bf16", "int8", "fp8"])
@pytest.mark.parametrize("policy", POLICY_NAMES, indirect=True)
@MODES
def test_cuda_compiled_matches_reference(policy, storage, joint, monkeypatch):
    """On a GPU every policy takes the compiled fused path (Triton), decode, update and
    encode in one kernel. Triton may contract multiply-adds, so the states are held to a
    rounding tolerance rather than bit for bit: floats within 1e-5 of their scale, 8-bit
    codes off by at most one step on at most 1% of values."""
    kernels(monkeypatch, native=True, compile_=True)

    def cuda_params():
        return [torch.nn.Parameter(p.detach().cuda()) for p in make_params(big=(300, 257))]

    fused, ref = cuda_params(), cuda_params()
    opt_fused = train(policy, storage, fused, joint=joint, steps=3)
    opt_ref = train(policy, storage, ref, joint=joint, steps=3, fast=False)
    assert "compiled" in {e["path"] for e in opt_fused.kernel_report()}
    for a, b in zip(fused, ref):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5
        for key, want in opt_ref.state[b].items():
            got = opt_fused.state[a][key]
            if not isinstance(want, torch.Tensor):
                assert got == want
            elif want.dtype == torch.uint8:
                step = (got.int() - want.int()).abs()
                assert step.max() <= 1 and (step > 0).float().mean() <= 0.01, key
            else:
                scale = want.float().abs().max().clamp_min(1e-30)
                tolerance = 1e-2 if want.dtype == torch.bfloat16 else 1e-5
                assert ((got.float() - want.float()).abs().max() / scale) < tolerance, key
