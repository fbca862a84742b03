"""Retain losses of LLM unlearning (formulas in docs/objectives.md): gd, kl, ap.

Reductions: ``gd`` is the Hugging Face cross-entropy (mean over all answer tokens of the
batch); ``kl`` is the mean over answer positions (pooled over the batch) of
KL(p_ref || p_theta) over the full vocabulary; ``ap`` uses summed per-sequence NLLs and
averages over sequences. ``ap`` reads the IDK answers for the retain questions from
``batch["idk"]``.

Example:
    >>> import torch
    >>> from moopt.objectives import ObjectiveContext, get_objective
    >>> class Uniform(torch.nn.Module):
    ...     def forward(self, input_ids, attention_mask=None):
    ...         return torch.zeros(*input_ids.shape, 5)
    >>> batch = {"input_ids": torch.tensor([[0, 1, 2]]),
    ...          "attention_mask": torch.ones(1, 3, dtype=torch.long),
    ...          "labels": torch.tensor([[-100, 1, 2]])}
    >>> m = Uniform()
    >>> float(get_objective("kl")(m, batch, ObjectiveContext(ref_model=m)))
    0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from moopt.objectives._checks import positive
from moopt.objectives.base import ObjectiveContext
from moopt.objectives.lm_utils import (
    answer_cross_entropy,
    answer_positions_logprobs,
    sequence_nll,
    sub_batch,
)
from moopt.objectives.registry import register_objective

Batch = Mapping[str, Any]


@register_objective(
    "gd", role="retain", description="Gradient descent: CE(y_r | x_r), mean over answer tokens"
)
def gradient_descent(model: nn.Module, batch: Batch, ctx: ObjectiveContext) -> Tensor:
    """GD = CE(y_r | x_r)."""
    return answer_cross_entropy(model, batch)


@register_objective(
    "kl",
    role="retain",
    needs_reference=True,
    description="KL(p_ref || p_theta), mean over retain answer positions",
)
def kl_retain(model: nn.Module, batch: Batch, ctx: ObjectiveContext) -> Tensor:
    """KL = mean over answer positions of sum_v p_ref(v) (log p_ref(v) - log p_theta(v))."""
    assert ctx.ref_model is not None
    logp, _ = answer_positions_logprobs(model, batch)
    if logp.shape[0] == 0:
        raise ValueError("objective 'kl': batch has no answer token (all labels are -100)")
    with torch.no_grad():
        ref_logp, _ = answer_positions_logprobs(ctx.ref_model, batch)
    if ref_logp.shape[-1] != logp.shape[-1]:
        raise ValueError(
            f"objective 'kl': reference vocabulary size {ref_logp.shape[-1]} differs from "
            f"the model's {logp.shape[-1]}"
        )
    ref_logp = ref_logp.to(logp.dtype)
    return (ref_logp.exp() * (ref_logp - logp)).sum(dim=-1).mean()


@register_objective(
    "ap",
    role="retain",
    description="Answer preservation: -(1/b) mean log sig(b (NLL(y_idk|x_r) - NLL(y_r|x_r)))",
)
def answer_preservation(
    model: nn.Module, batch: Batch, ctx: ObjectiveContext, *, beta: float = 0.1
) -> Tensor:
    """AP = -(1/beta) mean log sigmoid(beta (NLL(y_idk | x_r) - NLL(y_r | x_r))), summed NLLs."""
    beta = positive("ap", "beta", beta)
    idk = sub_batch(batch, "idk", "ap")
    nll_r, _ = sequence_nll(model, batch)
    nll_idk, _ = sequence_nll(model, idk)
    return -(1.0 / beta) * F.logsigmoid(beta * (nll_idk - nll_r)).mean()
