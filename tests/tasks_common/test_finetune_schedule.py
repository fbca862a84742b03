"""Stage 1's learning-rate schedule is transformers' cosine-with-floor schedule, and gives
the same factors, bit for bit, as the closed form the cached stage-1 models were trained
with (so those caches and the documented demo numbers stay valid)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers", reason="stage 1 needs moopt[llm]")

import torch  # noqa: E402
from moopt.tasks.common.finetune import warmup_cosine_schedule  # noqa: E402


def closed_form(step: int, total: int, warmup: float = 0.05, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` of the steps, then a half cosine down to ``floor``."""
    n_warm = max(1, int(total * warmup))
    if step < n_warm:
        return step / n_warm
    progress = (step - n_warm) / max(1, total - 1 - n_warm)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@pytest.mark.parametrize("total", [1, 2, 3, 10, 57, 100, 480, 1140, 2333, 4800])
def test_same_factors_as_the_closed_form(total):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    factor = warmup_cosine_schedule(opt, total).lr_lambdas[0]
    assert [factor(s) for s in range(total)] == [closed_form(s, total) for s in range(total)]


def test_it_is_transformers_scheduler():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    factor = warmup_cosine_schedule(opt, 50).lr_lambdas[0]
    assert factor.func.__module__ == "transformers.optimization"
