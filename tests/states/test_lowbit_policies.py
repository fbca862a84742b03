"""Low-bit storage with every sharing policy, in alternating and joint mode."""

import pytest
import torch

import moopt
from moopt.states.int8 import Int8Storage

POLICIES = moopt.list_policies()
# Every registered low-bit backend, and per-role mixes.
LOWBIT = [*(s for s in moopt.list_storages() if s != "fp32"), {"base": "fp32", "delta": "int8"},
          {"default": "bf16"}]


def toy_problem(seed: int = 0):
    """Two regression objectives that pull a 64x64 linear map towards different targets."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 64, generator=gen)
    w_a = torch.randn(64, 64, generator=gen) / 8
    w_b = w_a + torch.randn(64, 64, generator=gen) / 16
    return x, {"a": x @ w_a.T, "b": x @ w_b.T}


def train(policy, storage, *, steps: int, joint: bool, seed: int = 0) -> float:
    x, targets = toy_problem(seed)
    torch.manual_seed(seed)
    model = torch.nn.Linear(64, 64)
    opt = moopt.MultiObjectiveOptimizer(model.parameters(), ["a", "b"], policy, storage,
                                        lr=3e-3, weight_decay=0.01, lr_ratios={"a": 0.5})
    schedule = moopt.schedules.Alternating({"a": 1, "b": 5})
    names = iter(schedule)
    for _ in range(steps):
        if joint:
            out = model(x)
            losses = {k: (out - t).pow(2).mean() for k, t in targets.items()}
            opt.backward(losses)
            opt.step(weights={"a": 1.0, "b": 2.0})
        else:
            k = next(names)
            (model(x) - targets[k]).pow(2).mean().backward()
            opt.step(objective=k)
        opt.zero_grad()
    with torch.no_grad():
        out = model(x)
        return sum((out - t).pow(2).mean().item() for t in targets.values())


@pytest.mark.parametrize("joint", [False, True], ids=["alternating", "joint"])
@pytest.mark.parametrize("policy", POLICIES)
def test_lowbit_tracks_fp32_in_short_runs(policy, joint):
    base = train(policy, "fp32", steps=30, joint=joint)
    start = train(policy, "fp32", steps=0, joint=joint)
    assert base < 0.5 * start  # the run makes real progress
    for storage in LOWBIT:
        got = train(policy, storage, steps=30, joint=joint)
        assert got == pytest.approx(base, rel=0.05), storage


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_quality_500_steps_within_2_percent(policy):
    """The issue's quality target: int8 and bf16 reach a final loss within 2% of fp32.

    One-sided on purpose: bridged low-bit runs end 2-5% *below* fp32 on this toy (low-bit
    rounding damps the cycle the two objectives end in; with the Adam-bound clip used
    before, 5-7%); shared and decoupled agree to 0.1%. See docs/benchmarks.md.
    """
    base = train(policy, "fp32", steps=500, joint=False)
    for storage in (s for s in moopt.list_storages() if s != "fp32"):
        got = train(policy, storage, steps=500, joint=False)
        assert got <= 1.02 * base, (storage, got, base)
        if policy != "bridged":
            assert got >= 0.98 * base, (storage, got, base)


def test_int8_quantizes_everything_with_min_size_zero():
    p = torch.nn.Parameter(torch.randn(10))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", Int8Storage(min_size=0))
    p.grad = torch.ones(10)
    opt.step(objective="a")
    assert {k for k in opt.state[p] if "#" in k} >= {"m/a#codes", "m/a#absmax"}
