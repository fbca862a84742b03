"""Every built-in policy against the independent float64 re-derivation (tests/core/reference.py)."""

import numpy as np
import pytest
import torch

import moopt
from tests.core.reference import ReferenceOptimizer

POLICIES = ReferenceOptimizer.POLICIES


def schedule_1_to_5(objectives, steps, rng):
    cycle = [objectives[0]] + [objectives[1]] * 5
    return [cycle[i % len(cycle)] for i in range(steps)]


def random_schedule(objectives, steps, rng):
    return [objectives[i] for i in rng.integers(0, len(objectives), size=steps)]


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n_objectives", [2, 3])
@pytest.mark.parametrize("make_schedule", [schedule_1_to_5, random_schedule])
@pytest.mark.parametrize("fast_path", [True, False])
def test_alternating_matches_reference(policy, n_objectives, make_schedule, fast_path):
    rng = np.random.default_rng(n_objectives * 7 + len(policy))
    names = ["forget", "retain", "aux"][:n_objectives]
    hp = dict(lr=0.02, betas=(0.9, 0.95), base_betas=(0.85, 0.99), eps=1e-8,
              weight_decay=0.05, lr_ratios={"forget": 1.7})
    # Two param groups with different hyperparameters; one reference per group.
    theta = [rng.normal(size=7), rng.normal(size=(3, 4))]
    params = [torch.nn.Parameter(torch.tensor(t)) for t in theta]
    group2 = dict(lr=0.005, weight_decay=0.0, betas=(0.8, 0.9),
                  lr_ratios={names[-1]: 0.5})
    opt = moopt.MultiObjectiveOptimizer(
        [{"params": [params[0]]}, {"params": [params[1]], **group2}], names, policy,
        fast_path=fast_path, **hp)
    refs = [
        ReferenceOptimizer(theta[0], names, policy, **hp),
        ReferenceOptimizer(theta[1], names, policy, **{**hp, **group2}),
    ]
    scale = {k: 3.0 ** -i for i, k in enumerate(names)}  # objectives of different sizes
    for k in make_schedule(names, 40, rng):
        grads = [rng.normal(size=t.shape) * scale[k] + 0.3 for t in theta]
        for p, g, ref in zip(params, grads, refs):
            p.grad = torch.tensor(g)
            ref.alternating(k, g)
        opt.step(objective=k)
    for p, ref in zip(params, refs):
        assert max_rel(p.detach().numpy(), ref.theta) < 1e-12


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("fast_path", [True, False])
def test_joint_matches_reference(policy, fast_path):
    rng = np.random.default_rng(3)
    names = ["a", "b", "c"]
    hp = dict(lr=0.01, betas=(0.9, 0.95), base_betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1,
              lr_ratios={"a": 2.0, "c": 0.5})
    theta = rng.normal(size=11)
    p = torch.nn.Parameter(torch.tensor(theta))
    opt = moopt.MultiObjectiveOptimizer([p], names, policy, fast_path=fast_path, **hp)
    ref = ReferenceOptimizer(theta, names, policy, **hp)
    weights = {"a": 1.0, "b": 3.0, "c": 0.5}
    for step in range(30):
        # Objective "c" sits out every third step: counters and weights must follow.
        present = names if step % 3 else names[:2]
        grads = {k: rng.normal(size=11) * (i + 1) for i, k in enumerate(present)}
        for k, g in grads.items():
            p.grad = torch.tensor(g)
            opt.stash_grads(k)
        opt.step(weights=weights)
        ref.joint(grads, weights)
        assert max_rel(p.detach().numpy(), ref.theta) < 1e-12, step


@pytest.mark.parametrize("policy", POLICIES)
def test_joint_with_one_objective_equals_alternating(policy):
    rng = np.random.default_rng(5)
    grads = rng.normal(size=(25, 6))
    thetas = []
    for mode in ("alternating", "joint"):
        p = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
        opt = moopt.MultiObjectiveOptimizer([p], ["only"], policy, lr=0.03, weight_decay=0.01)
        for g in grads:
            if mode == "alternating":
                p.grad = torch.tensor(g)
                opt.step(objective="only")
            else:
                loss = (p * torch.tensor(g)).sum()
                opt.backward({"only": loss})
                opt.step(weights={"only": 4.0})
            opt.zero_grad()
        thetas.append(p.detach().numpy().copy())
    assert max_rel(thetas[1], thetas[0]) < 1e-13


def test_backward_keeps_gradients_apart_and_sums_to_full_gradient():
    lin = torch.nn.Linear(3, 1).double()
    opt = moopt.MultiObjectiveOptimizer(lin.parameters(), ["x", "y"], "decoupled")
    out = lin(torch.ones(2, 3, dtype=torch.float64)).sum()
    opt.backward({"x": out * 2, "y": out * -1})
    gx = opt._joint_grads["x"][lin.weight]
    gy = opt._joint_grads["y"][lin.weight]
    assert torch.allclose(gx, -2 * gy)
    assert lin.weight.grad is None


def test_params_without_grad_are_skipped_and_counters_do_not_advance():
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = moopt.MultiObjectiveOptimizer([a, b], ["f", "r"], "bridged", lr=0.1)
    a.grad = torch.ones(3, dtype=torch.float64)
    opt.step(objective="f")
    assert opt.state[a]["T"] == 1 and opt.state[a]["t/f"] == 1
    assert b not in opt.state or not opt.state[b]
    assert torch.equal(b.detach(), torch.ones(3, dtype=torch.float64))
