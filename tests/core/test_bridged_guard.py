"""The bridged cancellation guard: inert on well-conditioned float64, bounding in float32."""

import numpy as np
import pytest
import torch

import moopt
from tests.core.hazard import bridged_steps, deviation


def test_guard_is_inert_on_well_conditioned_float64():
    rng = np.random.default_rng(0)
    results = []
    for guard in (0.0, 8.0):
        p = torch.nn.Parameter(torch.zeros(100, dtype=torch.float64))
        opt = moopt.MultiObjectiveOptimizer([p], ["f", "r"], "bridged", lr=0.01,
                                            bridge_guard=guard)
        for i in range(60):
            k = "f" if i % 6 == 0 else "r"
            p.grad = torch.tensor(rng.normal(size=100) * (3 if k == "f" else 1))
            opt.step(objective=k)
        results.append(p.detach().clone())
        rng = np.random.default_rng(0)
    rel = ((results[0] - results[1]).abs().max() / results[0].abs().max()).item()
    assert rel < 1e-12


@pytest.fixture(scope="module")
def float64_steps():
    return bridged_steps(torch.float64)


def test_unguarded_float32_shows_the_hazard(float64_steps):
    """Without the guard the case really is ill-conditioned (else the next test proves nothing)."""
    dev = deviation(bridged_steps(torch.float32, guard=0.0), float64_steps)
    assert dev["worst_coordinate_ratio"] > 100


def test_guarded_float32_is_bounded_and_close(float64_steps):
    dev = deviation(bridged_steps(torch.float32), float64_steps)
    # No coordinate steps further than the float64 step (beyond rounding) ...
    assert dev["worst_coordinate_ratio"] < 1.25
    assert dev["max_step_over_reference_max"] < 1.01
    # ... and the whole update stays close to the float64 one.
    assert dev["norm_relative_error"] < 0.05
