"""Multi-task metrics: accuracy, binary F1, delta_m% and mean rank.

``delta_m`` follows Maninis et al. 2019 and Liu et al. 2021:

    delta_m% = mean_k (-1)^{l_k} (M_k - M_k,single) / M_k,single * 100

with ``l_k = 1`` when higher is better, so a multi-task model that beats its single-task
references gets a *negative* delta_m: lower is better.

Example:
    >>> from moopt.tasks.multitask_vision.metrics import delta_m, mean_rank
    >>> delta_m({"a": 0.5, "b": 0.75}, {"a": 0.5, "b": 1.0})
    12.5
    >>> mean_rank({"x": {"a": 0.9, "b": 0.5}, "y": {"a": 0.8, "b": 0.7}})
    {'x': 1.5, 'y': 1.5}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of rows whose arg-max logit is the label."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits but {labels.shape[0]} labels")
    if labels.numel() == 0:
        raise ValueError("accuracy of an empty batch is undefined")
    return float((logits.argmax(dim=-1) == labels).float().mean())


def binary_counts(pred: Tensor, labels: Tensor) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of 0/1 predictions."""
    pred, labels = pred.bool(), labels.bool()
    tp = int((pred & labels).sum())
    fp = int((pred & ~labels).sum())
    fn = int((~pred & labels).sum())
    return tp, fp, fn


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """F1 = 2 TP / (2 TP + FP + FN); 0 when there are no positives at all (as sklearn's
    ``zero_division=0``), so a rare attribute the model never predicts scores 0."""
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else 2.0 * tp / denom


def binary_f1(pred: Tensor, labels: Tensor) -> float:
    """F1 score of the positive class for 0/1 predictions."""
    return f1_from_counts(*binary_counts(pred, labels))


def _higher(direction: bool | Mapping[str, bool], task: str) -> bool:
    if isinstance(direction, Mapping):
        if task not in direction:
            raise KeyError(f"no higher_is_better entry for task {task!r}")
        return bool(direction[task])
    return bool(direction)


def delta_m(
    metrics: Mapping[str, float],
    single: Mapping[str, float],
    higher_is_better: bool | Mapping[str, bool] = True,
) -> float:
    """delta_m% of ``metrics`` against single-task references (lower is better)."""
    if set(metrics) != set(single):
        raise ValueError(
            f"delta_m needs the same tasks in both: got {sorted(metrics)} and {sorted(single)}"
        )
    if not metrics:
        raise ValueError("delta_m needs at least one task")
    total = 0.0
    for task, value in metrics.items():
        ref = float(single[task])
        if ref == 0.0:
            raise ValueError(f"single-task metric of {task!r} is 0; delta_m is undefined")
        sign = -1.0 if _higher(higher_is_better, task) else 1.0
        total += sign * (float(value) - ref) / ref
    return total / len(metrics) * 100.0


def mean_rank(
    results: Mapping[str, Mapping[str, float]],
    higher_is_better: bool | Mapping[str, bool] = True,
) -> dict[str, float]:
    """Mean over tasks of each method's rank (1 = best; ties share the average rank)."""
    if not results:
        raise ValueError("mean_rank needs at least one method")
    methods = list(results)
    tasks = list(next(iter(results.values())))
    for m in methods:
        if set(results[m]) != set(tasks):
            raise ValueError(f"method {m!r} has tasks {sorted(results[m])}, expected {tasks}")
    from scipy.stats import rankdata  # here, not at import: scipy.stats takes ~0.8 s to load

    ranks = {m: 0.0 for m in methods}
    for task in tasks:
        values = torch.tensor([float(results[m][task]) for m in methods], dtype=torch.float64)
        keyed = -values if _higher(higher_is_better, task) else values
        for m, r in zip(methods, rankdata(keyed.numpy(), method="average")):
            ranks[m] += float(r)
    return {m: ranks[m] / len(tasks) for m in methods}
