"""Forget losses of LLM unlearning (formulas in docs/objectives.md): ga, npo, simnpo, dpo, idk, me.

Reductions: ``ga`` and ``idk`` use the Hugging Face cross-entropy (mean over all answer
tokens of the batch, tokens pooled). ``npo``, ``simnpo`` and ``dpo`` use the per-sequence
*summed* answer NLL inside the sigmoid and average over sequences (``simnpo`` divides
each sequence's NLL by its answer length |y|). ``me`` averages over answer positions,
pooled over the batch. ``dpo`` and ``idk`` read the "I don't know" answers for the same
questions from ``batch["idk"]``.

Example:
    >>> import torch
    >>> from moopt.objectives import ObjectiveContext, get_objective
    >>> class Fixed(torch.nn.Module):   # same logits whatever the input
    ...     def __init__(self, logits): super().__init__(); self.w = torch.nn.Parameter(logits)
    ...     def forward(self, input_ids, attention_mask=None): return self.w.expand(
    ...         input_ids.shape[0], -1, -1)
    >>> batch = {"input_ids": torch.tensor([[0, 1, 2]]),
    ...          "attention_mask": torch.ones(1, 3, dtype=torch.long),
    ...          "labels": torch.tensor([[-100, 1, 2]])}
    >>> m = Fixed(torch.zeros(3, 4))
    >>> npo = get_objective("npo")
    >>> loss = npo(m, batch, ObjectiveContext(ref_model=m))  # equal models: -(2/b) log(1/2)
    >>> round(loss.item(), 4)
    13.8629
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from moopt.objectives._checks import finite, positive
from moopt.objectives.base import ObjectiveContext
from moopt.objectives.lm_utils import (
    answer_cross_entropy,
    answer_positions_logprobs,
    reference_sequence_nll,
    sequence_nll,
    sub_batch,
)
from moopt.objectives.registry import register_objective

Batch = Mapping[str, Any]


@register_objective(
    "ga", role="forget", description="Gradient ascent: -CE(y_f | x_f), mean over answer tokens"
)
def gradient_ascent(model: nn.Module, batch: Batch, ctx: ObjectiveContext) -> Tensor:
    """GA = -CE(y_f | x_f)."""
    return -answer_cross_entropy(model, batch)


@register_objective(
    "npo",
    role="forget",
    needs_reference=True,
    description="Negative preference optimization: -(2/b) mean log sig(b (NLL - NLL_ref))",
)
def npo(model: nn.Module, batch: Batch, ctx: ObjectiveContext, *, beta: float = 0.1) -> Tensor:
    """NPO = -(2/beta) mean_i log sigmoid(beta (NLL_theta(y_i|x_i) - NLL_ref(y_i|x_i))).

    The reference (the model before unlearning) is required: without it NPO is not defined;
    use ``simnpo`` for a reference-free variant.
    """
    beta = positive("npo", "beta", beta)
    assert ctx.ref_model is not None  # guaranteed by Objective.__call__
    nll, _ = sequence_nll(model, batch)
    ref = reference_sequence_nll(ctx.ref_model, batch).to(nll.dtype)
    return -(2.0 / beta) * F.logsigmoid(beta * (nll - ref)).mean()


@register_objective(
    "simnpo",
    role="forget",
    description="Simple NPO (no reference): -(2/b) mean log sig(b (NLL/|y| - gamma))",
)
def simnpo(
    model: nn.Module, batch: Batch, ctx: ObjectiveContext, *, beta: float = 2.5, gamma: float = 0.0
) -> Tensor:
    """SimNPO = -(2/beta) mean_i log sigmoid(beta (NLL_theta(y_i|x_i) / |y_i| - gamma)).

    gamma is inside the bracket as in docs/objectives.md (the SimNPO paper writes
    ``beta NLL/|y| - gamma``; the two agree for the default gamma = 0).
    """
    beta = positive("simnpo", "beta", beta)
    gamma = finite("simnpo", "gamma", gamma)
    nll, n = sequence_nll(model, batch)
    per_token = nll / n.clamp(min=1).to(nll.dtype)
    return -(2.0 / beta) * F.logsigmoid(beta * (per_token - gamma)).mean()


@register_objective(
    "dpo",
    role="forget",
    needs_reference=True,
    description="DPO with the IDK answer (batch['idk']) preferred over the true answer",
)
def dpo(model: nn.Module, batch: Batch, ctx: ObjectiveContext, *, beta: float = 0.1) -> Tensor:
    """DPO = -(2/beta) mean log sigmoid(beta [(logp(y_idk) - logp(y_f))
    - (logp_ref(y_idk) - logp_ref(y_f))]), logp = minus the summed answer NLL."""
    beta = positive("dpo", "beta", beta)
    assert ctx.ref_model is not None
    idk = sub_batch(batch, "idk", "dpo")
    nll_f, _ = sequence_nll(model, batch)
    nll_idk, _ = sequence_nll(model, idk)
    ref_f = reference_sequence_nll(ctx.ref_model, batch).to(nll_f.dtype)
    ref_idk = reference_sequence_nll(ctx.ref_model, idk).to(nll_f.dtype)
    margin = (nll_f - nll_idk) - (ref_f - ref_idk)  # = (logp_idk - logp_f) - (ref ...)
    return -(2.0 / beta) * F.logsigmoid(beta * margin).mean()


@register_objective(
    "idk", role="forget", description="Train on 'I don't know': CE(y_idk | x_f) from batch['idk']"
)
def idk(model: nn.Module, batch: Batch, ctx: ObjectiveContext) -> Tensor:
    """IDK = CE(y_idk | x_f), mean over the IDK answers' tokens."""
    return answer_cross_entropy(model, sub_batch(batch, "idk", "idk"))


@register_objective(
    "me",
    role="forget",
    description="Maximum entropy: mean over answer positions of KL(Uniform_V || p_theta)",
)
def max_entropy(model: nn.Module, batch: Batch, ctx: ObjectiveContext) -> Tensor:
    """ME = mean over answer positions of KL(U_V || p) = -log V - (1/V) sum_v log p_v."""
    logp, _ = answer_positions_logprobs(model, batch)
    if logp.shape[0] == 0:
        raise ValueError("objective 'me': batch has no answer token (all labels are -100)")
    vocab = logp.shape[-1]
    return (-math.log(vocab) - logp.mean(dim=-1)).mean()
