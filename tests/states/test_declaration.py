"""A policy declaration is checked when it is registered (or first used), and each error
names what is wrong."""

import pytest
import torch

import moopt
from moopt.states.policy import POLICIES, BufferSpec, SharingPolicy


def make(**attributes):
    def coefficients(self, info):
        return {"b": info.betas[0]}

    def update(self, grad, state, coef):
        return grad, {"m": state.m * coef.b}

    body = {"buffers": (BufferSpec("m", per_objective=True, signed=True, role="delta"),),
            "coefficients": coefficients, "update": update, **attributes}
    return type("Declared", (SharingPolicy,), body)


def test_a_complete_declaration_registers_and_steps():
    cls = moopt.register_policy("declared_ok", overwrite=True)(make())
    try:
        p = torch.nn.Parameter(torch.zeros(3))
        opt = moopt.MultiObjectiveOptimizer([p], ["a"], "declared_ok", lr=0.5)
        p.grad = torch.ones(3)
        opt.step()
        assert torch.equal(p.detach(), torch.full((3,), -0.5))
        assert cls.name == "declared_ok"
    finally:
        POLICIES.unregister("declared_ok")


@pytest.mark.parametrize(("attributes", "message"), [
    ({"buffers": ()}, "declares no buffers"),
    ({"joint_mode": "sum"}, "joint_mode 'sum' is not one of"),
    ({"coefficients": SharingPolicy.coefficients}, "must define coefficients()"),
    ({"update": SharingPolicy.update}, "must define update()"),
    ({"buffers": (BufferSpec("m", True, True, "delta"), BufferSpec("m", False, True, "base"))},
     "declares a buffer twice"),
])
def test_incomplete_declarations_are_refused(attributes, message):
    with pytest.raises((TypeError, ValueError), match=message):
        moopt.register_policy("declared_bad")(make(**attributes))
    assert "declared_bad" not in moopt.list_policies()


@pytest.mark.parametrize("name", ["m/k", "1m", "_m", "class", ""])
def test_buffer_names_are_identifiers(name):
    with pytest.raises(ValueError, match="must be a Python identifier"):
        BufferSpec(name, per_objective=True, signed=True, role="delta")


def test_bad_role_names_the_roles():
    with pytest.raises(ValueError, match="role 'momentum' is not one of"):
        BufferSpec("m", per_objective=True, signed=True, role="momentum")


def run_one_step(cls, fast_path=True):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = moopt.MultiObjectiveOptimizer([p], ["a"], cls(), lr=0.5, fast_path=fast_path)
    p.grad = torch.ones(3)
    opt.step()


@pytest.mark.parametrize("fast_path", [True, False])
def test_update_returning_an_unknown_buffer_is_named(fast_path, monkeypatch):
    monkeypatch.setenv("MOOPT_COMPILE", "0")

    def update(self, grad, state, coef):
        return grad, {"mom": grad}

    with pytest.raises(KeyError, match=r"returned \['mom'\], which are not its buffers"):
        run_one_step(make(update=update), fast_path)


def test_coefficient_names_must_not_change(monkeypatch):
    monkeypatch.setenv("MOOPT_COMPILE", "0")

    def coefficients(self, info):
        return {"b": 0.9} if info.T == 3 else {"c": 0.9}

    def update(self, grad, state, coef):
        return grad, {}

    policy = make(coefficients=coefficients, update=update)()
    p = torch.nn.Parameter(torch.zeros(3))
    opt = moopt.MultiObjectiveOptimizer([p], ["a"], policy, lr=0.5)
    for _ in range(2):
        p.grad = torch.ones(3)
        opt.step()
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"returned \['b'\], expected the names \['c'\]"):
        opt.step()


def test_coefficients_may_read_custom_group_hyperparameters(monkeypatch):
    """No sample step is needed: the names come from the first real step, whose StepInfo
    carries the param group."""
    monkeypatch.setenv("MOOPT_COMPILE", "0")

    def coefficients(self, info):
        return {"b": info.group["kick"]}

    cls = moopt.register_policy("declared_group", overwrite=True)(make(coefficients=coefficients))
    try:
        p = torch.nn.Parameter(torch.zeros(3))
        opt = moopt.MultiObjectiveOptimizer([{"params": [p], "kick": 4.0}], ["a"], cls(), lr=0.5)
        p.grad = torch.ones(3)
        opt.step()
        assert torch.equal(p.detach(), torch.full((3,), -0.5))
        assert torch.equal(opt.state[p]["m/a"], torch.zeros(3))  # 0 * kick
    finally:
        POLICIES.unregister("declared_group")
