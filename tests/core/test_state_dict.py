"""state_dict / load_state_dict: exact round trip, lockstep continuation, mismatch errors."""

import copy
import io

import pytest
import torch

import moopt
from moopt.errors import StateMismatchError


def make(policy="bridged", objectives=("f", "r"), seed=0, **kw):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1))
    opt = moopt.MultiObjectiveOptimizer(model.parameters(), list(objectives), policy, lr=1e-2,
                                        weight_decay=0.01, **kw)
    return model, opt


def train(model, opt, schedule, seed):
    gen = torch.Generator().manual_seed(seed)
    for k in schedule:
        x = torch.randn(8, 4, generator=gen)
        loss = model(x).pow(2).mean() * (-0.5 if k == "f" else 1.0)
        opt.zero_grad()
        loss.backward()
        opt.step(objective=k)


@pytest.mark.parametrize("policy", moopt.list_policies())
def test_save_load_continues_bit_identically(policy):
    schedule = ["f", "r", "r", "r", "r", "r"] * 3
    model_a, opt_a = make(policy)
    train(model_a, opt_a, schedule, seed=1)
    buffer = io.BytesIO()
    torch.save({"model": model_a.state_dict(), "opt": opt_a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model_b, opt_b = make(policy, seed=99)
    model_b.load_state_dict(saved["model"])
    opt_b.load_state_dict(saved["opt"])
    train(model_a, opt_a, schedule, seed=2)
    train(model_b, opt_b, schedule, seed=2)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        sa, sb = opt_a.state[pa], opt_b.state[pb]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


def test_loaded_state_is_a_copy():
    model_a, opt_a = make()
    train(model_a, opt_a, ["f", "r"], seed=1)
    sd = opt_a.state_dict()
    model_b, opt_b = make()
    opt_b.load_state_dict(sd)
    train(model_a, opt_a, ["r"], seed=3)
    pb = next(model_b.parameters())
    assert opt_b.state[pb]["T"] == 2


def test_state_dict_records_metadata():
    _, opt = make("decoupled", storage={"delta": "fp32"})
    meta = opt.state_dict()["moopt"]
    assert meta["objectives"] == ["f", "r"]
    assert meta["policy"] == "decoupled"
    assert meta["storage"]["delta"]["name"] == "fp32"


@pytest.mark.parametrize(("other", "message"), [
    (dict(policy="shared"), "policy"),
    (dict(objectives=("f", "x")), "objectives"),
    (dict(objectives=("r", "f")), "objectives"),
    (dict(objectives=("f", "r", "z")), "objectives"),
])
def test_mismatch_is_refused_and_nothing_changes(other, message):
    model_a, opt_a = make()
    train(model_a, opt_a, ["f", "r"], seed=1)
    model_b, opt_b = make(**other)
    train(model_b, opt_b, ["f"], seed=4)
    before = copy.deepcopy(opt_b.state_dict())
    with pytest.raises(StateMismatchError, match=message):
        opt_b.load_state_dict(opt_a.state_dict())
    after = opt_b.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for idx in before["state"]:
        for key, value in before["state"][idx].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(after["state"][idx][key]))


def test_foreign_state_dict_is_refused():
    model, opt = make()
    adam = torch.optim.Adam(model.parameters())
    with pytest.raises(StateMismatchError, match="not a moopt"):
        opt.load_state_dict(adam.state_dict())


def test_corrupted_state_shape_is_refused():
    model_a, opt_a = make()
    train(model_a, opt_a, ["f"], seed=1)
    sd = opt_a.state_dict()
    sd["state"][0]["m/f"] = torch.zeros(3)
    _, opt_b = make()
    with pytest.raises(StateMismatchError, match="m/f"):
        opt_b.load_state_dict(sd)
    assert not opt_b.state
