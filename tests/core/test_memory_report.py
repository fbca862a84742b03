import pytest
import torch

import moopt


@pytest.mark.parametrize(("policy", "buffers_per_objective", "shared_buffers"), [
    ("shared", 0, 2), ("decoupled", 2, 0), ("bridged", 2, 2)])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_fp32_bytes_match_the_formula(policy, buffers_per_objective, shared_buffers, n):
    model = torch.nn.Linear(30, 20)
    names = [f"o{i}" for i in range(n)]
    opt = moopt.MultiObjectiveOptimizer(model.parameters(), names, policy)
    model(torch.ones(1, 30)).sum().backward()
    opt.step(objective="o0")
    report = opt.memory_report()
    numel = 30 * 20 + 20
    assert report["num_params"] == numel
    assert report["total_bytes"] == numel * 4 * (shared_buffers + n * buffers_per_objective)
    assert report["bytes_per_param"] == 4 * (shared_buffers + n * buffers_per_objective)
    assert sum(report["by_role"].values()) == report["total_bytes"]
    assert sum(report["by_objective"].values()) == report["total_bytes"]
    for k in names:
        assert report["by_objective"][k] == numel * 4 * buffers_per_objective
    assert report["by_objective"]["shared"] == numel * 4 * shared_buffers


def test_bridged_roles():
    p = torch.nn.Parameter(torch.zeros(10))
    opt = moopt.MultiObjectiveOptimizer([p], ["f", "r"], "bridged")
    p.grad = torch.ones(10)
    opt.step(objective="f")
    report = opt.memory_report()
    assert report["by_role"] == {"base": 80, "delta": 160}


def test_empty_before_first_step():
    opt = moopt.MultiObjectiveOptimizer([torch.nn.Parameter(torch.zeros(4))], ["a"])
    assert opt.memory_report()["total_bytes"] == 0
