"""Fake causal LMs with fixed logits and float64 numpy references for the objective tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

IGNORE = -100


class FixedLogits(nn.Module):
    """Returns a learnable [B, S, V] logits tensor whatever the input (shapes must match)."""

    def __init__(self, logits: torch.Tensor, wrap: bool = False) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.wrap = wrap

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        assert input_ids.shape == self.logits.shape[:2]
        return SimpleNamespace(logits=self.logits) if self.wrap else self.logits


def make_batch(labels: list[list[int]]) -> dict[str, torch.Tensor]:
    """A batch whose input ids equal the labels where scored (ids are irrelevant to fakes)."""
    lab = torch.tensor(labels)
    ids = lab.clamp(min=0)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": lab}


def log_softmax_np(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def seq_nll_np(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL and counts per sequence by explicit loops (position i predicts label i+1)."""
    lp = log_softmax_np(logits)
    b, s, _ = logits.shape
    nll, cnt = np.zeros(b), np.zeros(b)
    for i in range(b):
        for t in range(1, s):
            if labels[i, t] != IGNORE:
                nll[i] -= lp[i, t - 1, labels[i, t]]
                cnt[i] += 1
    return nll, cnt


def answer_rows_np(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log-probability rows [n_answer_tokens, V] at answer positions."""
    lp = log_softmax_np(logits)
    rows = [
        lp[i, t - 1]
        for i in range(labels.shape[0])
        for t in range(1, labels.shape[1])
        if labels[i, t] != IGNORE
    ]
    return np.stack(rows)


def log_sigmoid_np(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)
