"""With one objective, ``shared`` and ``decoupled`` are exactly torch.optim.AdamW."""

import pytest
import torch

import moopt


# The policies that are AdamW with one objective (bridged is not: its base lags a step).
@pytest.mark.parametrize("policy", ["shared", "decoupled"])
@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_n1_equals_adamw_float64(policy, fast_path, weight_decay):
    torch.manual_seed(0)
    model_a = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model_a = model_a.double()
    model_b = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model_b = model_b.double()
    model_b.load_state_dict(model_a.state_dict())
    hp = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
    ref = torch.optim.AdamW(model_a.parameters(), **hp)
    opt = moopt.MultiObjectiveOptimizer(model_b.parameters(), ["loss"], policy,
                                        fast_path=fast_path, **hp)
    for _ in range(50):
        x = torch.randn(16, 5, dtype=torch.float64)
        y = torch.randn(16, 2, dtype=torch.float64)
        for model, o in ((model_a, ref), (model_b, opt)):
            o.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            o.step()
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        err = (pa - pb).abs().max() / pa.abs().max()
        assert err < 1e-12, err
