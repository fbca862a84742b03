"""What every rank runs in tests/distributed/test_runner_parallel.py: whole runs of the
float64 regression task through ``run_task`` with ``parallel`` = none / ddp / fsdp.

Each case is ``(label, config overrides, how)`` where ``how`` is ``"full"`` (one run),
``"stop"`` (stopped after 3 steps, then resumed in the same job), ``"die"`` (every rank
exits abruptly inside step 5, with checkpoints every 2 steps; the test resumes it in a
second job with ``"resume"``) or ``"refused"`` (rank 0 refuses the run directory: every
rank must raise). Rank 0 saves the final parameters (gathered from the
shards under fsdp) as ``<label>-params.pt``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from moopt.runner.run import run_task
from tests.distributed.harness import full_params, write_result
from tests.runner.regression_task import RegressionConfig, RegressionTask

STEPS = 6
# The cases of the default job (workers.everything): ddp alternating and fsdp joint, both
# with gradient accumulation, stopped after 3 steps and resumed.
RUNNER_CASES = [
    ("ddp-alternating-accum2", {"parallel": "ddp", "grad_accum": 2, "policy": "decoupled"},
     "stop"),
    ("fsdp-joint-accum2", {"parallel": "fsdp", "schedule": "joint", "grad_accum": 2}, "stop"),
    ("refused", {}, "refused"),
]


def config(out: Path, label: str, **kw: Any) -> RegressionConfig:
    base = dict(steps=STEPS, lr=0.02, policy="bridged", progress=False, device="cpu",
                out=out / label, cache_dir=out / "cache", schedule={"a": 1, "b": 2},
                batch=4, eval_every=3)
    base.update(kw)
    return RegressionConfig(**base)


class DyingTask(RegressionTask):
    """Exits the process (no clean-up, like a kill) at the ``die_at``-th loss call."""

    def __init__(self, die_at: int) -> None:
        self.die_at = die_at

    def build(self, cfg, ctx):
        setup = super().build(cfg, ctx)
        calls = [0]
        for spec in setup.objectives.values():
            inner = spec.loss

            def loss(batch, inner=inner):
                calls[0] += 1
                if calls[0] == self.die_at:
                    os._exit(0)
                return inner(batch)

            spec.loss = loss
        return setup


def refused_everywhere(rank: int, out: Path) -> str:
    """Every rank's error when rank 0 refuses the run directory (it holds another run)."""
    import torch.distributed as dist

    from moopt.runner.rundir import open_run_dir

    cfg = config(out, "refused", parallel="ddp")
    if rank == 0:  # another run's config in that directory
        open_run_dir(cfg.out, cfg.model_copy(update={"steps": 1}))
    dist.barrier()
    try:
        run_task(RegressionTask(), cfg, plots=False)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


def run_cases(rank: int, world: int, out: Path, cases: list[tuple[str, dict, str]]) -> None:
    out.mkdir(exist_ok=True)
    for label, overrides, how in cases:
        if how == "refused":
            (out / f"refused-rank{rank}.txt").write_text(refused_everywhere(rank, out))
            continue
        cfg = config(out, label, **overrides)
        if how == "die":
            cfg = cfg.model_copy(update={"checkpoint_every": 2})
            # 2 objectives per step in joint mode; alternating: 1 loss per micro-batch
            per_step = 2 if cfg.schedule == "joint" else 1
            run_task(DyingTask(die_at=4 * per_step * cfg.grad_accum + 1), cfg, plots=False)
            continue
        if how == "stop":
            part = run_task(RegressionTask(), cfg, stop_after=3, plots=False)
            assert part.train.step == 3 and not part.train.finished
        if how == "resume":
            cfg = cfg.model_copy(update={"checkpoint_every": 2})
        result = run_task(RegressionTask(), cfg, resume=how in ("stop", "resume"),
                          plots=False)
        params = full_params(result.setup.model)
        if rank == 0:
            torch.save(params, out / f"{label}-params.pt")
            (out / f"{label}-result.json").write_text(json.dumps(
                {"step": result.train.step, "metrics": result.metrics}))
    write_result(out, rank, {"done": True}, "cases")
