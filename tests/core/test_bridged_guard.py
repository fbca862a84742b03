"""The bridged cancellation guard: inert on well-conditioned float64, bounding in float32,
and low-bit bridged steps that follow float64 per coordinate (no systematic shrink)."""

import numpy as np
import pytest
import torch

import moopt
from moopt.states import bridged
from moopt.states.bridged import LOSSY_STEP_BOUND
from tests.core.hazard import (
    bridged_steps,
    conflicting_stream,
    deviation,
    median_displacement_ratio,
    stream_steps,
)


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


SCHEDULES = {"1:5": (1, 5), "1:1": (1, 1)}


@pytest.fixture(scope="module", params=list(SCHEDULES))
def conflict(request):
    """A conflicting stream (forget 3x retain) and its float64 per-step changes."""
    stream = conflicting_stream(SCHEDULES[request.param])
    return stream, stream_steps(stream, torch.float64, guard=0.0)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("storage", ["bf16", "int8"])
def test_lowbit_bridged_follows_float64_per_coordinate(conflict, storage, fast_path):
    """ALGORITHMS.md: the median |displacement| / |float64 displacement| within 5% of 1 at
    every precision; the guard keeps every step within 3 lr (float64 here: up to ~200)."""
    stream, reference = conflict
    got = stream_steps(stream, torch.float32, storage=storage, fast_path=fast_path)
    assert 0.95 <= median_displacement_ratio(got, reference) <= 1.05
    assert got.abs().max().item() <= LOSSY_STEP_BOUND * 1e-3 * (1 + 1e-6)
    assert reference.abs().max().item() > 30 * 1e-3  # the stream does cancel


def test_a_guard_that_shrinks_lowbit_steps_fails_the_median_check(conflict, monkeypatch):
    """The check above has teeth: bounding directions at the exact-Adam limit (1.165 lr,
    the rule before) shrinks the int8 displacement below 0.95 of float64's."""
    monkeypatch.setattr(bridged, "LOSSY_STEP_BOUND", 1.165)
    stream, reference = conflict
    got = stream_steps(stream, torch.float32, storage="int8")
    assert median_displacement_ratio(got, reference) < 0.95


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_guard_leaves_fp32_and_float64_storage_unclipped(conflict, dtype):
    """fp32 / float64 state: only the rounding floor, no step bound (float64 steps of
    ~100 lr go through), and guarded float32 stays within 1% (norm) of float64."""
    stream, reference = conflict
    got = stream_steps(stream, dtype)
    assert got.abs().max().item() > 30 * 1e-3
    error = (got.sum(0) - reference.sum(0)).norm() / reference.sum(0).norm()
    assert error.item() < (1e-10 if dtype == torch.float64 else 1e-2)
