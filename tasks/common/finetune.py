"""Plain supervised fine-tuning of a causal LM on (question, answer) batches: AdamW, linear
warm-up then cosine decay, answer-token cross-entropy, gradient clipping. Used by the task
adapters' stage 1 (the unlearning target and retain-only models, the safety base model).

Example:
    >>> from moopt.tasks.common.finetune import cosine_with_warmup
    >>> [round(cosine_with_warmup(s, 100), 3) for s in (0, 5, 50, 99)]
    [0.0, 1.0, 0.58, 0.1]
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from moopt.runner import BatchStream


def cosine_with_warmup(step: int, total: int, warmup: float = 0.05, floor: float = 0.1) -> float:
    """LR factor: linear warm-up over ``warmup`` of the steps, then cosine down to ``floor``."""
    n_warm = max(1, int(total * warmup))
    if step < n_warm:
        return step / n_warm
    progress = (step - n_warm) / max(1, total - 1 - n_warm)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def finetune(model: nn.Module, batches: list[dict[str, Any]], *, epochs: float, lr: float,
             seed: int, desc: str | None = None) -> list[float]:
    """Plain AdamW fine-tuning (answer-token cross-entropy); returns the loss per step.
    With ``desc`` a progress bar is shown (on a terminal only). Dropout draws from torch's
    global generator, seeded here with ``seed`` inside a forked RNG state: the same inputs
    give the same model, and the caller's RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _finetune(model, batches, epochs=epochs, lr=lr, seed=seed, desc=desc)


def _finetune(model: nn.Module, batches: list[dict[str, Any]], *, epochs: float, lr: float,
              seed: int, desc: str | None) -> list[float]:
    import sys

    from tqdm.auto import tqdm

    from moopt.objectives import get_objective

    ce = get_objective("sft")
    steps = max(1, math.ceil(epochs * len(batches)))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, steps))
    stream = BatchStream(batches, seed=seed)
    losses = []
    model.train()
    show = desc is not None and sys.stderr.isatty()
    for _ in tqdm(range(steps), desc=desc, disable=not show, leave=False):
        loss = ce(model, next(stream))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
