"""Token-level helpers for causal language models (HF convention).

A *batch* is a dict with ``input_ids`` [B, S], ``attention_mask`` [B, S] and ``labels``
[B, S]. Labels are **unshifted** (``labels[:, i]`` is the token at position ``i``) and equal
``-100`` on prompt and padding positions, exactly like Hugging Face causal LMs expect. The
logits at position ``i`` predict the token at ``i + 1``, so every helper here shifts once.

Only ``input_ids`` and ``attention_mask`` are passed to the model; other keys of the batch
(for example ``idk``) are ignored. The model may return a tensor of logits or any object
with a ``.logits`` attribute (HF ``CausalLMOutput``).

Example:
    >>> import torch
    >>> from moopt.objectives.lm_utils import sequence_nll
    >>> class Uniform(torch.nn.Module):
    ...     def forward(self, input_ids, attention_mask=None):
    ...         return torch.zeros(*input_ids.shape, 4)  # 4-token vocabulary, uniform
    >>> batch = {"input_ids": torch.tensor([[1, 2, 3]]),
    ...          "attention_mask": torch.ones(1, 3, dtype=torch.long),
    ...          "labels": torch.tensor([[-100, 2, 3]])}
    >>> nll, n = sequence_nll(Uniform(), batch)
    >>> round(float(nll[0]), 4), int(n[0])   # 2 answer tokens * log(4)
    (2.7726, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = -100
"""Label value of positions that are not scored (prompt and padding)."""

_REQUIRED_KEYS = ("input_ids", "attention_mask", "labels")


def _check_batch(batch: Mapping[str, Any], where: str) -> None:
    if not isinstance(batch, Mapping):
        raise TypeError(f"{where}: batch must be a dict, got {type(batch).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in batch]
    if missing:
        raise KeyError(
            f"{where}: batch is missing key(s) {missing}; it has {sorted(batch)} "
            f"(expected {list(_REQUIRED_KEYS)})"
        )
    ids, labels = batch["input_ids"], batch["labels"]
    if ids.dim() != 2 or labels.shape != ids.shape:
        raise ValueError(
            f"{where}: input_ids and labels must both be [batch, seq]; got "
            f"{tuple(ids.shape)} and {tuple(labels.shape)}"
        )


def model_logits(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """Run ``model`` on the batch's ``input_ids``/``attention_mask`` and return logits [B, S, V]."""
    _check_batch(batch, "model_logits")
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out if isinstance(out, Tensor) else getattr(out, "logits", None)
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"model {type(model).__name__} returned {type(out).__name__}; expected a logits "
            "tensor or an object with a .logits tensor"
        )
    ids = batch["input_ids"]
    if logits.dim() != 3 or logits.shape[:2] != ids.shape:
        raise ValueError(
            f"model {type(model).__name__} returned logits of shape {tuple(logits.shape)}; "
            f"expected [{ids.shape[0]}, {ids.shape[1]}, vocab]"
        )
    return logits


def shift_for_next_token(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Align logits with the tokens they predict.

    Returns ``(logits[:, :-1], labels[:, 1:], mask)`` where ``mask`` is True on scored
    (answer) positions. Half-precision logits are upcast to float32 so the log-softmax does
    not lose the small differences the unlearning losses depend on; float64 stays float64.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    shifted_logits = logits[:, :-1, :]
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    return shifted_logits, shifted_labels, mask


def token_logprobs_from_logits(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position log-probability of the next (label) token.

    Returns ``(logp, mask)``, both [B, S-1]; ``logp`` is 0 where ``mask`` is False.
    """
    shifted_logits, shifted_labels, mask = shift_for_next_token(logits, labels)
    safe_labels = shifted_labels.masked_fill(~mask, 0)
    logp_all = F.log_softmax(shifted_logits, dim=-1)
    logp = logp_all.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return logp.masked_fill(~mask, 0.0), mask


def token_logprobs(model: nn.Module, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """Per-position log p(label | prefix) under ``model``; see ``token_logprobs_from_logits``."""
    return token_logprobs_from_logits(model_logits(model, batch), batch["labels"])


def sequence_nll_from_logits(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed answer-token NLL per sequence [B] and answer-token counts [B] from logits."""
    logp, mask = token_logprobs_from_logits(logits, labels)
    return -logp.sum(dim=-1), mask.sum(dim=-1)


def sequence_nll(model: nn.Module, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """Per-sequence summed token cross-entropy over answer tokens, and answer-token counts.

    Returns ``(nll, n_tokens)``, both of shape [B]. A sequence without answer tokens gets
    ``nll = 0`` and ``n_tokens = 0``; callers that divide by ``n_tokens`` should clamp it.
    """
    return sequence_nll_from_logits(model_logits(model, batch), batch["labels"])


def mean_token_nll(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """Per-sequence mean answer-token NLL [B] (the per-token-normalised loss of TOFU metrics)."""
    nll, n = sequence_nll(model, batch)
    return nll / n.clamp(min=1).to(nll.dtype)


def answer_cross_entropy(model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """Mean cross-entropy over all answer tokens of the batch (HF ``model(labels=...)`` loss).

    Tokens are pooled across the batch (a long answer weighs more than a short one), which
    is what ``transformers`` computes. Raises when the batch has no answer token at all.
    """
    nll, n = sequence_nll(model, batch)
    total = n.sum()
    if int(total) == 0:
        raise ValueError("answer_cross_entropy: batch has no answer token (all labels are -100)")
    return nll.sum() / total.to(nll.dtype)


def reference_sequence_nll(ref_model: nn.Module, batch: Mapping[str, Any]) -> Tensor:
    """Summed answer-token NLL [B] of a frozen reference model, computed without autograd."""
    with torch.no_grad():
        nll, _ = sequence_nll(ref_model, batch)
    return nll.detach()


def answer_positions_logprobs(model: nn.Module, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """Full next-token log-distributions at answer positions: ``[n_answer_tokens, V]`` and the
    [B, S-1] mask that selected them (pooled over the batch, row-major order)."""
    logits = model_logits(model, batch)
    shifted_logits, _, mask = shift_for_next_token(logits, batch["labels"])
    return F.log_softmax(shifted_logits[mask], dim=-1), mask


def sub_batch(batch: Mapping[str, Any], key: str, objective: str) -> Mapping[str, Any]:
    """``batch[key]`` (e.g. the IDK answers), checked to be a batch of the same size."""
    if key not in batch:
        raise KeyError(
            f"objective {objective!r} needs batch[{key!r}] (a dict with input_ids, "
            f"attention_mask, labels for the same questions); batch has {sorted(batch)}"
        )
    sub = batch[key]
    _check_batch(sub, f"objective {objective!r}, batch[{key!r}]")
    n_main, n_sub = batch["input_ids"].shape[0], sub["input_ids"].shape[0]
    if n_main != n_sub:
        raise ValueError(
            f"objective {objective!r}: batch[{key!r}] has {n_sub} sequences but the batch "
            f"has {n_main}; they must pair up question by question"
        )
    return sub
