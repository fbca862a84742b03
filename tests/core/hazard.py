"""The ill-conditioned case of ALGORITHMS.md "Numerical hazard", shared by precision tests.

Forget gradients ~3x the retain gradients; ten forget steps fill the base with large second
moments, then retain steps read ``v_k^ + v_b^`` as a small difference of large numbers.
"""

from __future__ import annotations

import torch

import moopt

N_COORDS = 5000
SCHEDULE = ["forget"] * 10 + ["retain"] * 3


def bridged_steps(dtype: torch.dtype, *, storage="fp32", guard: float = 8.0,
                  n: int = N_COORDS, schedule=SCHEDULE) -> list[torch.Tensor]:
    """Per-step parameter changes (as float64) of a bridged optimizer on the hazard case."""
    gen = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.zeros(n, dtype=dtype))
    opt = moopt.MultiObjectiveOptimizer([p], ["forget", "retain"], "bridged", storage,
                                        lr=1e-3, bridge_guard=guard)
    deltas = []
    for k in schedule:
        g = torch.randn(n, generator=gen, dtype=torch.float64) * (3.0 if k == "forget" else 1.0)
        before = p.detach().double().clone()
        p.grad = g.to(dtype)
        opt.step(objective=k)
        deltas.append(p.detach().double() - before)
    return deltas


def deviation(steps: list[torch.Tensor], reference: list[torch.Tensor]) -> dict[str, float]:
    """How far ``steps`` are from the float64 ``reference`` steps."""
    worst_ratio = max((a.abs() / b.abs().clamp_min(1e-300)).max().item()
                      for a, b in zip(steps, reference))
    norm_rel = max(((a - b).norm() / b.norm()).item() for a, b in zip(steps, reference))
    step_bound = max(a.abs().max().item() for a in steps) / max(
        b.abs().max().item() for b in reference)
    return {"worst_coordinate_ratio": worst_ratio, "norm_relative_error": norm_rel,
            "max_step_over_reference_max": step_bound}


def conflicting_stream(schedule: tuple[int, int], *, n: int = 4096, steps: int = 60,
                       seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """A fixed stream of (objective, float64 gradient): per coordinate i, retain
    ``s_i (a_i + noise)`` and forget ``3 s_i (-a_i / 2 + sqrt(3) / 2 b_i + noise)``, with
    ``s_i = exp(z_i / 2)``, in the forget:retain ``schedule`` (benchmarks/fidelity.py's
    ``conflict`` stream)."""
    gen = torch.Generator().manual_seed(seed)

    def normal() -> torch.Tensor:
        return torch.randn(n, generator=gen, dtype=torch.float64)

    scale, a, b = torch.exp(0.5 * normal()), normal(), normal()
    means = {"retain": a, "forget": -0.5 * a + 0.75**0.5 * b}
    factor = {"retain": 1.0, "forget": 3.0}
    order = (["forget"] * schedule[0] + ["retain"] * schedule[1]) * steps
    return [(k, factor[k] * scale * (means[k] + normal())) for k in order[:steps]]


def stream_steps(stream, dtype: torch.dtype, *, storage="fp32", guard: float = 8.0,
                 fast_path: bool = True) -> torch.Tensor:
    """Per-step parameter changes (steps x coordinates, float64) of bridged on ``stream``."""
    p = torch.nn.Parameter(torch.zeros(stream[0][1].numel(), dtype=dtype))
    opt = moopt.MultiObjectiveOptimizer([p], ["forget", "retain"], "bridged", storage,
                                        lr=1e-3, bridge_guard=guard, fast_path=fast_path)
    deltas = []
    for k, g in stream:
        before = p.detach().to(torch.float64, copy=True)
        p.grad = g.to(dtype)
        opt.step(objective=k)
        deltas.append(p.detach().double() - before)
    return torch.stack(deltas)


def median_displacement_ratio(steps: torch.Tensor, reference: torch.Tensor) -> float:
    """Median over coordinates of |total displacement| / |reference total displacement|."""
    return (steps.sum(0).abs() / reference.sum(0).abs().clamp_min(1e-300)).median().item()
