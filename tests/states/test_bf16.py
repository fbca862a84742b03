"""The bf16 storage backend: nearest rounding, unbiased stochastic rounding, errors."""

import pytest
import torch

from moopt.errors import StateMismatchError
from moopt.states.bf16 import BF16Storage, stochastic_round_bf16


def test_round_to_nearest_matches_torch():
    backend = BF16Storage()
    p = torch.zeros(1000)
    parts = backend.allocate(p, signed=True)
    assert parts[""].dtype == torch.bfloat16
    value = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    backend.write(parts, value, signed=True)
    assert torch.equal(parts[""], value.to(torch.bfloat16))
    got = backend.read(parts, p, signed=True)
    assert got.dtype == torch.float32
    assert (got - value).abs().max() <= value.abs().max() * 2.0**-8
    assert backend.read(parts, p.double(), signed=True).dtype == torch.float64


def test_stochastic_rounding_picks_a_neighbour_and_is_unbiased():
    torch.manual_seed(0)
    lo = torch.tensor(1.0, dtype=torch.bfloat16).float()
    hi = torch.nextafter(torch.tensor(1.0, dtype=torch.bfloat16),
                         torch.tensor(2.0, dtype=torch.bfloat16)).float()
    x = lo + 0.3 * (hi - lo)  # 30% of the way up: RNE always gives lo
    n = 200_000
    samples = stochastic_round_bf16(torch.full((n,), x.item())).float()
    assert bool(((samples == lo) | (samples == hi)).all())
    frac_up = (samples == hi).double().mean().item()
    sigma = (0.3 * 0.7 / n) ** 0.5
    assert abs(frac_up - 0.3) < 5 * sigma  # unbiased: E[stored] = x
    # Negative values round in magnitude the same way.
    neg = stochastic_round_bf16(torch.full((n,), -x.item())).float()
    assert abs((neg == -hi).double().mean().item() - 0.3) < 5 * sigma
    assert torch.full((1,), x.item()).to(torch.bfloat16).float().item() == lo.item()


def test_stochastic_rounding_lets_small_ema_updates_accumulate():
    """An EMA creeping towards a target in steps below half a bf16 spacing stalls under
    nearest rounding but follows the float32 EMA on average under stochastic rounding."""
    torch.manual_seed(1)
    target, beta, steps, n = 1.0, 0.999, 300, 4000
    exact = torch.full((n,), 1.5)
    results = {}
    for sr in (False, True):
        backend = BF16Storage(stochastic_rounding=sr)
        p = torch.zeros(n)
        parts = backend.allocate(p, signed=True)
        backend.write(parts, torch.full((n,), 1.5), signed=True)
        for _ in range(steps):
            v = backend.read(parts, p, signed=True)
            backend.write(parts, v * beta + (1 - beta) * target, signed=True)
        results[sr] = backend.read(parts, p, signed=True).mean().item()
    for _ in range(steps):
        exact = exact * beta + (1 - beta) * target
    want = exact.mean().item()
    assert results[False] == 1.5  # every update rounded away
    assert abs(results[True] - want) < 0.01 * (1.5 - want)


def test_stochastic_rounding_keeps_non_finite():
    x = torch.tensor([float("inf"), float("-inf"), float("nan"), 3.0])
    y = stochastic_round_bf16(x).float()
    assert y[0] == float("inf") and y[1] == float("-inf") and torch.isnan(y[2])


def test_unit_roundoff_and_config():
    assert BF16Storage().unit_roundoff(torch.zeros(1)) == 2.0**-8
    assert BF16Storage(stochastic_rounding=True).unit_roundoff(torch.zeros(1)) == 2.0**-7
    assert BF16Storage(stochastic_rounding=True).config() == {"stochastic_rounding": True}
    with pytest.raises(ValueError, match="stochastic_rounding.*'yes'"):
        BF16Storage(stochastic_rounding="yes")


def test_float32_parts_are_refused():
    with pytest.raises(StateMismatchError, match="bfloat16"):
        BF16Storage().read({"": torch.zeros(3)}, torch.zeros(3), signed=True)
