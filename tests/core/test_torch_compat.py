"""The optimizer behaves like a torch.optim optimizer: schedulers, closures, groups, dtypes."""

import pytest
import torch

import moopt


def test_lr_scheduler_drives_the_learning_rate():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "decoupled", lr=1.0,
                                        lr_ratios={"b": 0.5})
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    moves = []
    for k in ["a", "a", "b"]:
        p.grad = torch.ones(2, dtype=torch.float64)
        before = p.detach().clone()
        opt.step(objective=k)
        sched.step()
        moves.append((before - p.detach())[0].item())
    # Adam with a constant gradient steps by ~lr_k: 1.0, then 0.1, then 0.01 * 0.5.
    assert moves == pytest.approx([1.0, 0.1, 0.005], rel=1e-6)


def test_closure_is_evaluated_and_returned():
    p = torch.nn.Parameter(torch.ones(3))
    opt = moopt.MultiObjectiveOptimizer([p], ["only"], "shared", lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == pytest.approx(3.0)
    assert torch.all(p < 1)


def test_zero_grad_set_to_none_false_and_pending_joint_grads():
    p = torch.nn.Parameter(torch.ones(3))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"])
    p.grad = torch.ones(3)
    opt.zero_grad(set_to_none=False)
    assert torch.equal(p.grad, torch.zeros(3))
    opt.zero_grad()
    opt.backward({"a": p.sum()})
    opt.zero_grad()
    p.grad = torch.ones(3)
    opt.step(objective="a")  # no pending joint gradients remain


def test_add_param_group_takes_defaults_and_overrides():
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], lr=0.1, lr_ratios={"a": 2.0})
    opt.add_param_group({"params": [q], "lr": 0.5, "lr_ratios": {"b": 3.0}})
    assert opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[1]["lr_ratios"] == {"a": 1.0, "b": 3.0}
    assert opt.param_groups[0]["lr_ratios"] == {"a": 2.0, "b": 1.0}
    assert opt.param_groups[1]["betas"] == (0.9, 0.95)


def test_repr_names_policy_storage_and_objectives():
    opt = moopt.MultiObjectiveOptimizer([torch.nn.Parameter(torch.ones(1))], ["f", "r"],
                                        storage={"base": "fp32", "delta": "fp32"})
    text = repr(opt)
    assert "policy='bridged'" in text and "base=fp32" in text and "['f', 'r']" in text
    assert "bridge_guard: 8.0" in text


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_params_update_with_float32_math(dtype):
    p32 = torch.nn.Parameter(torch.linspace(-1, 1, 64))
    plow = torch.nn.Parameter(p32.detach().to(dtype))
    opt32 = moopt.MultiObjectiveOptimizer([p32], ["a"], "bridged", lr=1e-2)
    optlow = moopt.MultiObjectiveOptimizer([plow], ["a"], "bridged", lr=1e-2)
    for i in range(5):
        g = torch.sin(torch.arange(64.0) + i)
        p32.grad, plow.grad = g, g.to(dtype)
        opt32.step()
        optlow.step()
    assert plow.dtype == dtype
    assert optlow.state[plow]["m/a"].dtype == torch.float32
    assert torch.allclose(plow.float(), p32.detach(), atol=2e-2)


def test_state_is_float64_for_float64_params():
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = moopt.MultiObjectiveOptimizer([p], ["a"], "bridged")
    p.grad = torch.ones(2, dtype=torch.float64)
    opt.step()
    assert opt.state[p]["v_base"].dtype == torch.float64
