"""Objectives usable in any role: ``sft`` (answer cross-entropy) and ``ce`` (classification).

Example:
    >>> import torch
    >>> from moopt.objectives import get_objective
    >>> model = torch.nn.Linear(2, 3)
    >>> torch.nn.init.zeros_(model.weight); torch.nn.init.zeros_(model.bias)  # doctest: +ELLIPSIS
    Parameter...
    >>> loss = get_objective("ce")(model, {"x": torch.ones(4, 2), "y": torch.tensor([0, 1, 2, 0])})
    >>> round(loss.item(), 4)   # uniform over 3 classes: log 3
    1.0986
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from moopt.objectives.base import ObjectiveContext
from moopt.objectives.lm_utils import answer_cross_entropy
from moopt.objectives.registry import register_objective

Batch = Mapping[str, Any]


@register_objective(
    "sft", role="any", description="Supervised fine-tuning: CE of the answer tokens (= gd)"
)
def sft(model: nn.Module, batch: Batch, ctx: ObjectiveContext) -> Tensor:
    """SFT = CE(y | x), mean over answer tokens; the same value as ``gd``."""
    return answer_cross_entropy(model, batch)


@register_objective(
    "ce", role="any", description="Classification cross-entropy of model(batch['x']) vs batch['y']"
)
def classification_ce(model: nn.Module, batch: Batch, ctx: ObjectiveContext) -> Tensor:
    """CE = F.cross_entropy(model(batch['x']), batch['y']) (mean over examples)."""
    for key in ("x", "y"):
        if key not in batch:
            raise KeyError(f"objective 'ce' needs batch[{key!r}]; batch has {sorted(batch)}")
    out = model(batch["x"])
    logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"objective 'ce': model returned {type(out).__name__}; expected a logits tensor "
            "or an object with .logits"
        )
    return F.cross_entropy(logits, batch["y"])
