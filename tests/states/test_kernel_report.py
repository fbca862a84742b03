"""``MultiObjectiveOptimizer.kernel_report()``: which path stepped each param group last, and
why when it was not fused."""

import pytest
import torch

import moopt
from moopt.states.bf16 import BF16Storage
from moopt.states.fast.stepper import COMPILE_MIN_NUMEL


def step(opt, params, objective="a"):
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step(objective=objective)
    return opt.kernel_report()


def test_groups_and_paths(monkeypatch):
    monkeypatch.setenv("MOOPT_NATIVE", "sync")
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    native = [torch.nn.Parameter(torch.zeros(64)) for _ in range(3)]
    double = [torch.nn.Parameter(torch.zeros(8, dtype=torch.float64))]
    opt = moopt.MultiObjectiveOptimizer([{"params": native}, {"params": double}], ["a", "b"],
                                        "bridged", lr=0.1)
    report = step(opt, native + double)
    assert report == [
        {"group": 0, "path": "native", "params": 3, "why": ""},
        {"group": 1, "path": "eager", "params": 1, "why": "MOOPT_COMPILE=0"}]


def test_reasons_of_the_unfused_paths(monkeypatch):
    monkeypatch.setenv("MOOPT_NATIVE", "0")
    monkeypatch.setenv("MOOPT_COMPILE", "1")
    small = [torch.nn.Parameter(torch.zeros(100))]
    opt = moopt.MultiObjectiveOptimizer(small, ["a", "b"], "bridged", lr=0.1)
    (entry,) = step(opt, small)
    assert entry["path"] == "eager"
    assert f"below the compile threshold of {COMPILE_MIN_NUMEL}" in entry["why"]
    opt = moopt.MultiObjectiveOptimizer(small, ["a", "b"], "bridged",
                                        BF16Storage(stochastic_rounding=True), lr=0.1)
    (entry,) = step(opt, small)
    assert entry["path"] == "reference" and "gives no codec in torch ops" in entry["why"]
    opt = moopt.MultiObjectiveOptimizer(small, ["a", "b"], "bridged", fast_path=False)
    assert step(opt, small) == [{"group": 0, "path": "reference", "params": 1,
                                 "why": "fast_path=False"}]


def test_report_follows_the_last_step_of_each_group(monkeypatch):
    monkeypatch.setenv("MOOPT_NATIVE", "sync")
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    a, b = torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(5))
    opt = moopt.MultiObjectiveOptimizer([{"params": [a]}, {"params": [b]}], ["x"], "shared")
    assert opt.kernel_report() == []
    step(opt, [a], "x")
    assert [e["group"] for e in opt.kernel_report()] == [0]
    b.grad = torch.ones(5)
    opt.step()
    assert [e["group"] for e in opt.kernel_report()] == [0, 1]


@pytest.mark.parametrize("device", ["cpu"])
def test_bfloat16_parameters_take_the_fused_path(device, monkeypatch):
    monkeypatch.setenv("MOOPT_NATIVE", "sync")
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    p = torch.nn.Parameter(torch.zeros(64, dtype=torch.bfloat16, device=device))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", lr=0.1)
    (entry,) = step(opt, [p])
    assert entry["path"] == "eager" and p.dtype == torch.bfloat16
    assert torch.allclose(p.float(), torch.full((64,), -0.1), atol=1e-3)
