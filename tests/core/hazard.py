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
