"""Device and dtype of the unlearning task's own model work, from the run fields.

The runner places the model it trains (run fields ``device`` and ``precision``); the task
also loads and evaluates models itself (stage 1: the target and the retain model) and keeps
a frozen reference copy for NPO/DPO/KL. These helpers make that work follow the same run
fields: stage 1 evaluates on the run's device (``auto``: CUDA when there is one; under
torchrun ``cuda:LOCAL_RANK``), checkpoints load in bfloat16 for ``precision=bf16`` (else
float32), and the reference model moves to the trained model's device and dtype before
its first use. A config without these fields (or ``device=cpu``) keeps everything on the
CPU in float32.

Example:
    >>> import torch
    >>> from types import SimpleNamespace
    >>> from moopt.tasks.unlearning.placement import follow, load_dtype, run_device
    >>> run_device(SimpleNamespace(device="cpu")), load_dtype(SimpleNamespace(precision="bf16"))
    (device(type='cpu'), torch.bfloat16)
    >>> ref, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2).double()
    >>> follow(ref, model); ref.weight.dtype
    torch.float64
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def run_device(cfg: Any) -> torch.device:
    """The device of the run fields, resolved as the runner resolves it (``cpu`` when the
    config has no ``device``)."""
    from moopt.runner.devices import resolve_device

    return resolve_device(str(getattr(cfg, "device", None) or "cpu"))


def load_dtype(cfg: Any) -> torch.dtype:
    """bfloat16 for ``precision=bf16`` (bfloat16 weights), float32 otherwise."""
    return torch.bfloat16 if getattr(cfg, "precision", None) == "bf16" else torch.float32


def follow(ref: nn.Module | None, model: nn.Module) -> None:
    """Move ``ref`` to the device and floating dtype of ``model``'s parameters, if they
    differ (the runner may have moved or cast the trained model after ``build``)."""
    if ref is None:
        return
    target = next(model.parameters(), None)
    current = next(ref.parameters(), None)
    if target is None or current is None:
        return
    if current.device != target.device or current.dtype != target.dtype:
        ref.to(device=target.device, dtype=target.dtype)
