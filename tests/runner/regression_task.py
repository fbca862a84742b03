"""A two-objective regression task whose losses are means over items, for the run-field
tests (gradient accumulation, precision, ranks): a small tanh MLP with two outputs fits
one target per objective (objective ``a`` on output 0, ``b`` on output 1).

Every batch is a dict ``{"x": (b, IN), "y": {"a": (b, OUT), "b": (b, OUT)}}`` drawn by a
:class:`~moopt.runner.data.BatchStream` of single items, so ``grad_accum`` micro-batches of
``batch`` items hold exactly the items of one batch of ``grad_accum * batch`` (the order of
an epoch depends only on the seed and the number of items).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from moopt.runner import BatchStream, RunConfig, TaskAdapter, TrainingSetup, TrainObjective

IN, OUT = 6, 2


class RegressionConfig(RunConfig):
    batch: int = Field(4, ge=1, description="items per batch")
    n_items: int = Field(64, ge=1)
    width: int = 8
    dtype: Literal["float32", "float64"] = "float64"


def collate(items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> dict:
    x, ya, yb = (torch.stack(t) for t in zip(*items))
    return {"x": x, "y": {"a": ya, "b": yb}}


class RegressionTask(TaskAdapter):
    name = "regression"
    config_class = RegressionConfig

    def build(self, cfg: RegressionConfig, ctx) -> TrainingSetup:
        dtype = getattr(torch, cfg.dtype)
        gen = torch.Generator().manual_seed(1234)
        x = torch.randn(cfg.n_items, IN, generator=gen, dtype=torch.float64)
        ya = torch.sin(x[:, 0] * 2)
        yb = -x[:, 1].pow(2) + x[:, 2]
        items = list(zip(x.to(dtype), ya.to(dtype), yb.to(dtype)))
        torch.manual_seed(cfg.seed)
        model = nn.Sequential(nn.Linear(IN, cfg.width), nn.Tanh(),
                              nn.Linear(cfg.width, OUT)).to(dtype)
        seen: dict[str, object] = {}

        def loss_for(key: str):
            def loss(batch: dict) -> torch.Tensor:
                out = model(batch["x"])
                seen["output_dtype"] = out.dtype
                seen["input_device"] = batch["x"].device
                pred = out[:, "ab".index(key)]
                return (pred.float() if pred.dtype == torch.bfloat16 else pred).sub(
                    batch["y"][key]).pow(2).mean()
            return loss

        def stream(seed: int) -> BatchStream:
            return BatchStream(items, batch_size=cfg.batch, collate=collate, seed=seed)

        return TrainingSetup(
            model,
            {"a": TrainObjective(loss_for("a"), stream(cfg.seed)),
             "b": TrainObjective(loss_for("b"), stream(cfg.seed + 1))},
            steps_per_epoch=max(1, cfg.n_items // cfg.batch),
            extras={"seen": seen, "x": x.to(dtype), "ya": ya.to(dtype), "yb": yb.to(dtype)},
        )

    def evaluate(self, setup: TrainingSetup, cfg: RegressionConfig, ctx) -> dict[str, float]:
        model = setup.model
        dtype = next(model.parameters()).dtype
        x = setup.extras["x"].to(ctx.device, dtype)
        with torch.no_grad():
            out = model(x).double().cpu()
        return {"mse_a": float((out[:, 0] - setup.extras["ya"].double()).pow(2).mean()),
                "mse_b": float((out[:, 1] - setup.extras["yb"].double()).pow(2).mean())}
