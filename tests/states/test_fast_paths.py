"""The fast path (moopt.states.fast) equals the per-tensor reference path."""

import pytest
import torch

import moopt
from moopt.states.bf16 import BF16Storage
from moopt.states.fast import compiled, fast_step, with_fast_path
from moopt.states.int8 import Int8Storage
from moopt.states.policy import GroupBatch

POLICIES = ["shared", "decoupled", "bridged"]


@pytest.fixture(autouse=True, params=["native", "torch"])
def kernels(request, monkeypatch):
    # Every test runs with the native CPU kernels and with the eager torch kernels (what
    # runs where no C compiler is found); compiled ones are slow and live in the slow suite.
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    monkeypatch.setenv("MOOPT_NATIVE", "sync" if request.param == "native" else "0")
    return request.param


def make_params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(48, 100), (5000,), (7,), (30, 20)]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    # A non-contiguous parameter (a transposed view) takes the copy-in/copy-out route.
    base = torch.randn(20, 30, generator=gen, dtype=dtype)
    params[3] = torch.nn.Parameter(base.t())
    return params


def run(policy, storage, dtype, *, steps=9, seed=0, fast=True, joint=False):
    params = make_params(dtype, seed)
    # The default optimizer takes the fast path by itself; fast_path=False is the reference.
    opt = moopt.MultiObjectiveOptimizer(
        params, ["a", "b"], policy, storage, lr=1e-2, weight_decay=0.1, lr_ratios={"a": 0.5},
        fast_path=fast)
    gen = torch.Generator().manual_seed(seed + 1)
    for i in range(steps):
        k = "a" if i % 3 == 0 else "b"
        grads = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in params]
        if joint:
            for name in ("a", "b"):
                for p, g in zip(params, grads):
                    p.grad = g * (1.0 if name == "a" else -0.5)
                opt.stash_grads(name)
            opt.step()
        else:
            for p, g in zip(params, grads):
                p.grad = g
            opt.step(objective=k)
    return params, opt


@pytest.mark.parametrize("policy", POLICIES)
def test_float64_fast_equals_reference(policy):
    fast, _ = run(policy, "fp32", torch.float64)
    ref, _ = run(policy, "fp32", torch.float64, fast=False)
    for a, b in zip(fast, ref):
        # Same operations, reassociated in places: agreement to float64 rounding, measured
        # against the tensor's scale (a cancelling bridged coordinate amplifies one ulp).
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-12


def assert_close_to_reference(fast, opt_fast, ref, opt_ref, storage):
    for a, b in zip(fast, ref):
        diff = (a - b).abs() / b.abs().max()
        # Rounding differences of one ulp are amplified on the rare coordinates where
        # bridged's v_k^ + v_b^ cancels; they stay far below one step (lr = 1e-2).
        assert diff.max().item() < 1e-3
        if storage == "fp32":
            assert diff.mean().item() < 1e-6
        else:
            assert diff.mean().item() < 1e-4
    # The stored states agree too (same layout, same values up to a rounding step).
    for pa, pb in zip(fast, ref):
        sa, sb = opt_fast.state[pa], opt_ref.state[pb]
        assert sa.keys() == sb.keys()
        for key in sa:
            if key.endswith("#codes"):
                differ = (sa[key].int() - sb[key].int()).abs()
                assert differ.float().mean() < 0.02 and differ.max() <= 2
            elif isinstance(sa[key], torch.Tensor):
                scale = sb[key].float().abs().max().clamp_min(1e-30)
                assert ((sa[key].float() - sb[key].float()).abs().max() / scale) < 0.02
            else:
                assert sa[key] == sb[key]


STORAGES = ["fp32", "bf16", "int8", {"base": "fp32", "delta": "int8"}]


@pytest.mark.parametrize("storage", STORAGES, ids=str)
@pytest.mark.parametrize("policy", POLICIES)
def test_float32_fast_matches_reference(policy, storage):
    fast, opt_fast = run(policy, storage, torch.float32)
    ref, opt_ref = run(policy, storage, torch.float32, fast=False)
    assert_close_to_reference(fast, opt_fast, ref, opt_ref, storage)


@pytest.mark.parametrize("storage", STORAGES + [Int8Storage(block_size=64, min_size=0)],
                         ids=str)
@pytest.mark.parametrize("policy", POLICIES)
def test_joint_fast_matches_reference(policy, storage, kernels):
    fast, opt_fast = run(policy, storage, torch.float32, joint=True)
    ref, opt_ref = run(policy, storage, torch.float32, joint=True, fast=False)
    if kernels == "torch":  # joint mode needs the native kernels: the reference path ran
        for a, b in zip(fast, ref):
            assert torch.equal(a, b)
    else:
        assert_close_to_reference(fast, opt_fast, ref, opt_ref, storage)


def test_bfloat16_parameters():
    fast, _ = run("bridged", "fp32", torch.bfloat16)
    ref, _ = run("bridged", "fp32", torch.bfloat16, fast=False)
    for a, b in zip(fast, ref):
        assert a.dtype == torch.bfloat16
        # float32 math agrees to an ulp, which can flip a bfloat16 rounding now and then;
        # over 9 bridged steps such a flip grows to a few bfloat16 ulps on ~0.1% of values.
        diff = (a.float() - b.float()).abs()
        assert bool((diff <= 2.0**-5 * b.float().abs() + 1e-6).all())
        assert (diff > 0).float().mean().item() < 0.01


def _batch(grads):
    p = torch.nn.Parameter(torch.zeros(3))
    return GroupBatch([p], grads, None, [{}], [], {"base": BF16Storage(True),
                                                   "delta": "x"}, 0.0)


def test_declines_what_it_cannot_take():
    assert fast_step("bridged", _batch(None)) is False  # joint mode
    assert fast_step("bridged", _batch([torch.zeros(3)])) is False  # stochastic rounding
    assert fast_step("my_policy", _batch([torch.zeros(3)])) is False


@pytest.mark.parametrize("policy", POLICIES)
def test_joint_mode_runs_on_the_native_kernels(policy, kernels, monkeypatch):
    from moopt.states.fast import native

    calls = []
    for name in ("step", "step_mixed"):
        real = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _real=real, _name=name:
                            calls.append(_name) or _real(*a))
    run(policy, "int8", torch.float32, joint=True, steps=2)
    if kernels == "torch":
        assert calls == []
        return
    # 3 contiguous parameters (the transposed one takes the reference path), 2 steps; per
    # parameter one Adam step on the mixed gradient (shared), one per objective (decoupled),
    # one delta step per objective and one base update on the mixed gradients (bridged).
    per_param = {"shared": ["step_mixed"], "decoupled": ["step", "step"],
                 "bridged": ["step", "step", "step_mixed"]}[policy]
    assert calls == per_param * 6


def _joint_subsets_run(policy, storage, fast):
    """Three objectives with weights; one parameter gets no gradient from "c", another only
    from "a": every objective's counter and weight follow the objectives present."""
    gen = torch.Generator().manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(300, 40, generator=gen)) for _ in range(3)]
    opt = moopt.MultiObjectiveOptimizer(params, ["a", "b", "c"], policy, storage, lr=1e-2,
                                        weight_decay=0.05, lr_ratios={"b": 0.3}, fast_path=fast)
    for _ in range(5):
        for k, who in (("a", [0, 1, 2]), ("b", [0, 1]), ("c", [0])):
            for i, p in enumerate(params):
                p.grad = torch.randn(p.shape, generator=gen) if i in who else None
            opt.stash_grads(k)
        opt.step(weights={"a": 1.0, "b": 2.0, "c": 0.5})
    return params, opt


@pytest.mark.parametrize("storage", ["fp32", "int8"])
@pytest.mark.parametrize("policy", POLICIES)
def test_joint_fast_with_objective_subsets_and_weights(policy, storage):
    fast, opt_fast = _joint_subsets_run(policy, storage, True)
    ref, opt_ref = _joint_subsets_run(policy, storage, False)
    assert_close_to_reference(fast, opt_fast, ref, opt_ref, storage)
    for p in fast:
        assert opt_fast.state[p]["T"] == 5


def test_joint_mode_declines_mixed_block_sizes():
    storage = {"base": Int8Storage(block_size=256, min_size=0),
               "delta": Int8Storage(block_size=64, min_size=0)}
    fast, _ = run("bridged", storage, torch.float32, joint=True, steps=3)
    ref, _ = run("bridged", storage, torch.float32, joint=True, steps=3, fast=False)
    for a, b in zip(fast, ref):
        assert torch.equal(a, b)


def test_stochastic_rounding_storage_falls_back():
    torch.manual_seed(3)
    fast, _ = run("decoupled", BF16Storage(stochastic_rounding=True), torch.float32, steps=3)
    torch.manual_seed(3)
    ref, _ = run("decoupled", BF16Storage(stochastic_rounding=True), torch.float32, steps=3,
                 fast=False)
    for a, b in zip(fast, ref):
        assert torch.equal(a, b)


def test_small_tensors_never_start_a_compile(monkeypatch):
    monkeypatch.setenv("MOOPT_COMPILE", "1")
    before = len(compiled._entries)
    run("bridged", "int8", torch.float32, steps=2)
    assert len(compiled._entries) == before


def test_default_optimizer_dispatches_here(monkeypatch):
    import moopt.states.fast.step as step_module

    calls = []
    real = step_module.fast_step
    monkeypatch.setattr(step_module, "fast_step",
                        lambda policy, batch: calls.append(policy) or real(policy, batch))
    for policy in POLICIES:
        run(policy, "fp32", torch.float32, steps=1)
    assert calls == POLICIES


def test_with_fast_path_equals_default():
    p, q = torch.nn.Parameter(torch.ones(5)), torch.nn.Parameter(torch.ones(5))
    a = moopt.MultiObjectiveOptimizer([p], ["a", "b"], with_fast_path("bridged"), lr=0.1)
    b = moopt.MultiObjectiveOptimizer([q], ["a", "b"], "bridged", lr=0.1)
    for opt, t in ((a, p), (b, q)):
        t.grad = torch.arange(5.0)
        opt.step(objective="b")
    assert torch.equal(p, q)


def test_compile_off_returns_none():
    assert compiled.mode() == "off"
    assert compiled.get(("test",), lambda x: None, lambda: (torch.zeros(2),)) is None
