"""Evaluation of a multi-head model: per-task accuracy (and binary F1 for 2-class tasks).

Example:
    >>> import torch
    >>> from moopt.tasks.multitask_vision.dataset import MultiTaskTensorDataset
    >>> from moopt.tasks.multitask_vision.evaluation import evaluate_model
    >>> class Always(torch.nn.Module):
    ...     def forward(self, x):
    ...         return {"a": torch.tensor([[0.0, 1.0]]).expand(len(x), 2)}
    >>> ds = MultiTaskTensorDataset(torch.zeros(4, 1, 8, 8), {"a": torch.tensor([1, 1, 0, 1])},
    ...                             {"a": 2})
    >>> evaluate_model(Always(), ds, batch_size=3)
    {'acc_a': 0.75, 'f1_a': 0.8571428571428571}
"""

from __future__ import annotations

from typing import Any

import torch
from moopt.tasks.multitask_vision.dataset import MultiTaskTensorDataset, stack_batches
from moopt.tasks.multitask_vision.metrics import binary_counts, f1_from_counts
from torch import nn


def _batches(data: Any, batch_size: int):
    if isinstance(data, MultiTaskTensorDataset):
        for start in range(0, len(data), batch_size):
            yield data.batch(torch.arange(start, min(start + batch_size, len(data))))
        return
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, collate_fn=stack_batches)
    yield from loader


@torch.no_grad()
def evaluate_model(model: nn.Module, data: Any, *, batch_size: int = 500) -> dict[str, float]:
    """``acc_<task>`` for every task; ``f1_<task>`` for binary tasks (F1 of class 1).
    Batches go to the device of the model's parameters, images in their dtype."""
    param = next(model.parameters(), None)
    was_training = model.training
    model.eval()
    correct: dict[str, int] = {}
    counts: dict[str, list[int]] = {}
    total = 0
    try:
        for images, labels in _batches(data, batch_size):
            if param is not None:
                images = images.to(param.device, param.dtype)
                labels = {t: y.to(param.device) for t, y in labels.items()}
            logits = model(images)
            total += images.shape[0]
            for task, out in logits.items():
                y = labels[task]
                pred = out.argmax(dim=-1)
                correct[task] = correct.get(task, 0) + int((pred == y).sum())
                if out.shape[-1] == 2:
                    c = counts.setdefault(task, [0, 0, 0])
                    for i, v in enumerate(binary_counts(pred, y)):
                        c[i] += v
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("cannot evaluate on an empty test set")
    out = {f"acc_{t}": n / total for t, n in correct.items()}
    out.update({f"f1_{t}": f1_from_counts(*c) for t, c in counts.items()})
    return out
