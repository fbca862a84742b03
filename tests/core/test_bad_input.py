"""Bad input raises an error naming the bad value; parameters and state stay unchanged."""

import math

import pytest
import torch

import moopt
from moopt.errors import NonFiniteGradientError, UnknownNameError


def param():
    return torch.nn.Parameter(torch.ones(3))


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(objectives=[]), "empty"),
    (dict(objectives=["a", "a"]), "'a' is listed twice"),
    (dict(objectives="forget"), "string 'forget'"),
    (dict(objectives=["a/b"]), "a/b"),
    (dict(policy="nope"), "unknown sharing policy 'nope'"),
    (dict(storage="fp7"), "unknown storage backend 'fp7'"),
    (dict(storage={"middle": "fp32"}), "'middle'"),
    (dict(lr=-1.0), "lr must be >= 0, got -1.0"),
    (dict(eps=-1e-8), "eps must be >= 0"),
    (dict(weight_decay=-0.1), "weight_decay must be >= 0"),
    (dict(betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\), got 1.0"),
    (dict(betas=(-0.1, 0.9)), r"betas\[0\]"),
    (dict(base_betas=(0.9,)), "base_betas must be a pair"),
    (dict(lr_ratios={"ghost": 1.0}), "unknown objective 'ghost'"),
    (dict(lr_ratios={"a": -2.0}), r"lr_ratios\['a'\] must be >= 0"),
    (dict(lr=math.nan), "lr must be finite"),
    (dict(nonfinite="warn"), "nonfinite must be one of"),
    (dict(bridge_guard=-1.0), "bridge_guard"),
])
def test_constructor_errors_name_the_value(kwargs, match):
    args = dict(objectives=["a", "b"], policy="bridged") | kwargs
    with pytest.raises((ValueError, TypeError), match=match):
        moopt.MultiObjectiveOptimizer([param()], **args)


def test_unknown_policy_is_an_unknown_name_error():
    with pytest.raises(UnknownNameError, match="known: bridged, decoupled, shared"):
        moopt.MultiObjectiveOptimizer([param()], ["a"], policy="adam")


def test_integer_parameter_is_refused():
    with pytest.raises(TypeError, match="parameter 1 has dtype torch.int64"):
        moopt.MultiObjectiveOptimizer([param(), torch.zeros(2, dtype=torch.long)], ["a"])


def test_bad_param_group_names_the_value_and_keeps_groups():
    opt = moopt.MultiObjectiveOptimizer([param()], ["a", "b"])
    with pytest.raises(ValueError, match="lr must be >= 0, got -3"):
        opt.add_param_group({"params": [param()], "lr": -3})
    with pytest.raises(ValueError, match="unknown objective 'c'"):
        opt.add_param_group({"params": [param()], "lr_ratios": {"c": 1.0}})
    assert len(opt.param_groups) == 1


def snapshot(opt, p):
    return p.detach().clone(), {k: (v.clone() if torch.is_tensor(v) else v)
                                for k, v in opt.state[p].items()}


def assert_unchanged(opt, p, snap):
    value, state = snap
    assert torch.equal(p.detach(), value)
    assert state.keys() == opt.state[p].keys()
    for k, v in state.items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt.state[p][k])), k


@pytest.mark.parametrize("policy", moopt.list_policies())
def test_unknown_objective_in_step_changes_nothing(policy):
    p = param()
    opt = moopt.MultiObjectiveOptimizer([p], ["forget", "retain"], policy)
    p.grad = torch.ones(3)
    opt.step(objective="forget")
    snap = snapshot(opt, p)
    with pytest.raises(ValueError, match="unknown objective 'forgt'.*'forget', 'retain'"):
        opt.step(objective="forgt")
    with pytest.raises(ValueError, match="needs objective"):
        opt.step()
    assert_unchanged(opt, p, snap)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("fast_path", [True, False])
def test_nonfinite_gradient_raises_and_changes_nothing(bad, fast_path):
    p, q = param(), param()
    opt = moopt.MultiObjectiveOptimizer([p, q], ["f", "r"], "bridged", fast_path=fast_path,
                                        nonfinite="raise")
    p.grad, q.grad = torch.ones(3), torch.ones(3)
    opt.step(objective="f")
    snaps = snapshot(opt, p), snapshot(opt, q)
    p.grad = torch.ones(3)
    q.grad = torch.tensor([1.0, bad, 1.0])
    with pytest.raises(NonFiniteGradientError, match="objective 'r'"):
        opt.step(objective="r")
    assert_unchanged(opt, p, snaps[0])
    assert_unchanged(opt, q, snaps[1])


def test_nonfinite_skip_mode_skips_the_step():
    p = param()
    opt = moopt.MultiObjectiveOptimizer([p], ["f", "r"], "decoupled", nonfinite="skip")
    p.grad = torch.tensor([math.nan, 0.0, 0.0])
    opt.step(objective="f")
    assert opt.skipped_steps == 1
    assert torch.equal(p.detach(), torch.ones(3)) and not opt.state[p]
    p.grad = torch.ones(3)
    opt.step(objective="f")
    assert opt.state[p]["t/f"] == 1


@pytest.mark.parametrize("policy", ["shared", "bridged"])
def test_nonfinite_ignore_mode_does_not_look(policy):
    """"ignore", the default, steps like torch.optim: finite gradients give the very same
    result as the checked modes, and a NaN goes straight into the parameter."""
    results = []
    for mode in ("raise", "skip", None):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 5000))
        options = {} if mode is None else {"nonfinite": mode}
        opt = moopt.MultiObjectiveOptimizer([p], ["f", "r"], policy, lr=0.1, **options)
        for k in ("f", "r", "r"):
            p.grad = torch.cos(p.detach() * 3)
            opt.step(objective=k)
        results.append(p.detach().clone())
    assert opt.nonfinite == "ignore"
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])
    p.grad = torch.zeros(5000)
    p.grad[7] = math.nan
    opt.step(objective="f")
    assert opt.skipped_steps == 0
    assert p[7].isnan() and p[:7].isfinite().all()


def test_joint_mode_errors():
    p = param()
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged")
    with pytest.raises(ValueError, match="unknown objective 'c'"):
        opt.backward({"c": (p * 2).sum()})
    with pytest.raises(ValueError, match="non-empty mapping"):
        opt.backward({})
    opt.backward({"a": (p * 2).sum(), "b": p.sum()})
    with pytest.raises(ValueError, match="joint-mode gradients"):
        opt.step(objective="a")
    with pytest.raises(ValueError, match=r"weights\['b'\] must be >= 0"):
        opt.step(weights={"b": -1.0})
    with pytest.raises(ValueError, match="unknown objective 'z'"):
        opt.step(weights={"z": 1.0})
    assert not opt.state[p]
    opt.step(weights={"a": 1.0, "b": 0.0})  # a zero weight drops that objective
    assert opt.state[p]["t/a"] == 1 and opt.state[p]["t/b"] == 0
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="already hold .grad"):
        opt.backward({"a": p.sum()})


def test_weights_outside_joint_mode_are_refused():
    p = param()
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"])
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="joint mode only"):
        opt.step(objective="a", weights={"a": 1.0})
