"""The bridged cancellation guard at bf16 and int8 precision (ALGORITHMS.md, hazard).

Low-bit storage cannot hold the few significant bits left after ``v_k^ + v_b^`` cancels,
so no guard can make each step equal the float64 one; what it must do is keep every step
bounded (no coordinate jumps by thousands of learning rates) and the trajectory pointing
where float64 goes. Unguarded, the same runs blow up.
"""

import functools

import pytest
import torch

import moopt
from moopt.states.bridged import LOSSY_STEP_BOUND
from tests.core.hazard import bridged_steps

LR = 1e-3  # the learning rate hazard.bridged_steps uses
STORAGES = [*moopt.list_storages(), {"base": "fp32", "delta": "int8"}]


@pytest.fixture(scope="module")
def float64_steps():
    return bridged_steps(torch.float64, guard=0.0)


def summary(steps, reference):
    total, want = sum(steps), sum(reference)
    return {
        "max_step_in_lr": max(s.abs().max().item() for s in steps) / LR,
        "reference_max_step_in_lr": max(s.abs().max().item() for s in reference) / LR,
        "cosine": torch.nn.functional.cosine_similarity(total, want, dim=0).item(),
        "relative_error": ((total - want).norm() / want.norm()).item(),
    }


@pytest.fixture(params=["fast", "reference"])
def path(request, monkeypatch):
    """Run the hazard case through the default fast path or the reference path."""
    if request.param == "reference":
        monkeypatch.setattr(moopt, "MultiObjectiveOptimizer",
                            functools.partial(moopt.MultiObjectiveOptimizer, fast_path=False))
    return request.param


@pytest.mark.parametrize("storage", STORAGES, ids=str)
def test_unguarded_low_precision_blows_up(storage, float64_steps, monkeypatch):
    monkeypatch.setattr(moopt, "MultiObjectiveOptimizer",
                        functools.partial(moopt.MultiObjectiveOptimizer, fast_path=False))
    got = summary(bridged_steps(torch.float32, storage=storage, guard=0.0), float64_steps)
    # Where the blow-up lands depends on rounding (the fast path's reassociated arithmetic
    # happens to dodge it for int8 on this seed: 37 lr), so the reference path shows it.
    assert got["max_step_in_lr"] > 1000 and got["relative_error"] > 10


@pytest.mark.parametrize("storage", STORAGES, ids=str)
def test_guarded_steps_are_bounded_and_follow_float64(storage, float64_steps, path):
    got = summary(bridged_steps(torch.float32, storage=storage), float64_steps)
    # Bounded: never beyond the float64 run's own largest step (43 lr here; the exact
    # float64 sum itself is tiny on some coordinates).
    assert got["max_step_in_lr"] <= 1.01 * got["reference_max_step_in_lr"]
    if storage == "fp32":
        assert got["relative_error"] < 0.02
    else:
        # Lossy storage: every direction within the step bound (3 lr) where float64 takes
        # up to 43. Measured: cosine 0.943-0.950, relative error 0.32-0.33 (the Adam-bound
        # clip used before gave 0.89-0.90 and 0.44-0.47).
        assert got["max_step_in_lr"] <= LOSSY_STEP_BOUND * (1 + 1e-6)
        assert got["cosine"] > 0.92 and got["relative_error"] < 0.4
