"""A task for runs under torchrun that are killed and resumed (tests/distributed/
test_runner_resume.py).

The toy task's two linear targets, with a hidden layer of ``width`` units (2048 makes every
weight big enough for 8-bit state). With ``MOOPT_TEST_KILL_AT=N`` in the environment, rank
0 kills itself with SIGKILL in its N-th loss evaluation, as an out-of-memory killer or a
preempted node would.
"""

from __future__ import annotations

import os
import signal

import torch
from torch import nn

from moopt.runner import BatchStream, TrainingSetup, TrainObjective
from tests.runner.toy_task import ToyConfig, ToyTask


class ResumeConfig(ToyConfig):
    width: int = 16


class ResumeToy(ToyTask):
    name = "resume-toy"
    config_class = ResumeConfig
    presets: dict = {}
    default_preset = None

    def build(self, cfg: ResumeConfig, ctx) -> TrainingSetup:
        A, B = ctx.prepared["A"], ctx.prepared["B"]
        model = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(3, cfg.width), nn.Tanh(),
                              nn.Linear(cfg.width, 2))
        gen = torch.Generator().manual_seed(cfg.seed)
        xs = [torch.randn(5, 3, generator=gen) for _ in range(cfg.n_batches)]
        kill_at = int(os.environ.get("MOOPT_TEST_KILL_AT", "0"))
        calls = [0]

        def target(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            if kill_at and calls[0] == kill_at and os.environ.get("RANK", "0") == "0":
                os.kill(os.getpid(), signal.SIGKILL)
            return (model(x) - x @ M).pow(2).mean()

        return TrainingSetup(
            model,
            {"a": TrainObjective(lambda x: target(x, A), BatchStream(xs, seed=cfg.seed)),
             "b": TrainObjective(lambda x: target(x, B), BatchStream(xs, seed=cfg.seed + 7))},
            steps_per_epoch=cfg.n_batches,
            extras={"x_eval": torch.randn(20, 3, generator=gen), "A": A, "B": B},
        )
