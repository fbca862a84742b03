"""A tiny two-objective regression task for runner tests.

One linear layer (with dropout, so resumption must restore the RNG) is pulled towards two
different linear targets: objective ``a`` fits ``X @ A``, objective ``b`` fits ``X @ B``.
"""

from __future__ import annotations

import torch
from torch import nn

from moopt.runner import (
    BatchStream,
    ReportSection,
    RunConfig,
    TaskAdapter,
    TrainingSetup,
    TrainObjective,
)


class ToyConfig(RunConfig):
    """The toy task adds two options (settable as --n-batches / --dropout)."""

    n_batches: int = 6
    dropout: float = 0.1


class ToyTask(TaskAdapter):
    name = "toy"
    description = "two linear targets for one linear layer"
    config_class = ToyConfig
    presets = {
        "tiny": {"steps": 12, "lr": 0.05, "schedule": {"a": 1, "b": 2}, "eval_every": 4,
                 "progress": False,
                 "compare": {"configs": [["shared", "fp32"], ["bridged", "fp32"],
                                         ["bridged", "no-such-storage"]],
                             "lrs": [0.01, 0.05], "seeds": [0, 1]}},
    }
    default_preset = "tiny"
    tradeoff = ("mse_a", "mse_b")
    higher_is_better = {"mse_a": False, "mse_b": False}

    def __init__(self) -> None:
        self.prepare_calls = 0

    def prepare(self, cfg, ctx):
        self.prepare_calls += 1
        gen = torch.Generator().manual_seed(1234)
        return {"A": torch.randn(3, 2, generator=gen), "B": torch.randn(3, 2, generator=gen)}

    def build(self, cfg: ToyConfig, ctx) -> TrainingSetup:
        A, B = ctx.prepared["A"], ctx.prepared["B"]
        model = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(3, 2))
        gen = torch.Generator().manual_seed(cfg.seed)
        xs = [torch.randn(5, 3, generator=gen) for _ in range(cfg.n_batches)]

        def loss_a(x: torch.Tensor) -> torch.Tensor:
            return (model(x) - x @ A).pow(2).mean()

        def loss_b(x: torch.Tensor) -> torch.Tensor:
            return (model(x) - x @ B).pow(2).mean()

        return TrainingSetup(
            model,
            {"a": TrainObjective(loss_a, BatchStream(xs, seed=cfg.seed)),
             "b": TrainObjective(loss_b, BatchStream(xs, seed=cfg.seed + 7))},
            steps_per_epoch=cfg.n_batches,
            extras={"x_eval": torch.randn(20, 3, generator=gen), "A": A, "B": B},
        )

    def evaluate(self, setup, cfg, ctx):
        x = setup.extras["x_eval"]
        setup.model.eval()
        with torch.no_grad():
            y = setup.model(x)
        return {"mse_a": float((y - x @ setup.extras["A"]).pow(2).mean()),
                "mse_b": float((y - x @ setup.extras["B"]).pow(2).mean())}

    def report_extras(self, setup, cfg, ctx):
        return [ReportSection("Toy notes", "targets A and B are random 3x2 matrices")]

    def compare_extras(self, rows, base, out, *, plots=True):
        for row in rows:
            row["toy_sum"] = row["mse_a_mean"] + row["mse_b_mean"]
        return [ReportSection("Toy summary", f"{len(rows)} rows")]
