"""Plain supervised fine-tuning of a causal LM on (question, answer) batches: AdamW, linear
warm-up then cosine decay (transformers' scheduler), answer-token cross-entropy, gradient
clipping. Used by the task adapters' stage 1 (the unlearning target and retain-only models,
the safety base model), which always build or load a transformers model: the scheduler's
import costs nothing more.

Example:
    >>> import torch
    >>> from moopt.tasks.common.finetune import warmup_cosine_schedule
    >>> opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> factor = warmup_cosine_schedule(opt, 100).lr_lambdas[0]
    >>> [round(factor(s), 3) for s in (0, 5, 50, 99)]
    [0.0, 1.0, 0.58, 0.1]
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from moopt.runner import BatchStream


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, total: int, warmup: float = 0.05,
                           floor: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' ``get_cosine_with_min_lr_schedule_with_warmup`` for ``total`` steps
    (indices 0 .. total - 1): linear warm-up over ``warmup`` of them (at least one), then a
    half cosine from the full rate down to ``floor`` times it, reached at the last step."""
    from moopt.tasks.common._deps import quiet_transformers

    transformers = quiet_transformers()
    n_warm = max(1, int(total * warmup))
    return transformers.get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=n_warm, num_training_steps=max(total - 1, n_warm),
        min_lr_rate=floor)


def finetune(model: nn.Module, batches: list[dict[str, Any]], *, epochs: float, lr: float,
             seed: int, desc: str | None = None, bar: bool = True) -> list[float]:
    """Plain AdamW fine-tuning (answer-token cross-entropy); returns the loss per step.
    With ``desc`` the stage shows its progress (:func:`moopt.runner.progress.stage_progress`:
    a bar on a terminal unless ``bar`` is False, one status line otherwise). Dropout draws
    from torch's global generator, seeded here with ``seed`` inside a forked RNG state: the
    same inputs give the same model, and the caller's RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _finetune(model, batches, epochs=epochs, lr=lr, seed=seed, desc=desc, bar=bar)


def _finetune(model: nn.Module, batches: list[dict[str, Any]], *, epochs: float, lr: float,
              seed: int, desc: str | None, bar: bool) -> list[float]:
    from moopt.objectives import get_objective
    from moopt.runner.progress import stage_progress

    ce = get_objective("sft")
    steps = max(1, math.ceil(epochs * len(batches)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = warmup_cosine_schedule(opt, steps)
    stream = BatchStream(batches, seed=seed)
    losses = []
    model.train()
    with stage_progress(desc or "", steps, bar=bar, enabled=desc is not None) as progress:
        for _ in range(steps):
            loss = ce(model, next(stream))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            progress.update()
    model.eval()
    return losses
