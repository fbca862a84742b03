"""Resumable checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint holds the model and optimizer ``state_dict``, the schedule position, each
objective's batch-stream position, any extra stateful objects of the task, the step, and
the random-number states of torch (CPU and CUDA), numpy and ``random``. It is written to a
temporary file first and renamed, so a crash never leaves a half-written checkpoint.

Example:
    >>> import random, torch
    >>> from moopt.runner.checkpoint import capture_rng, restore_rng
    >>> state = capture_rng()
    >>> a = torch.rand(2); b = random.random()
    >>> restore_rng(state)
    >>> bool((torch.rand(2) == a).all()) and random.random() == b
    True
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_NAME = "checkpoint.pt"


def capture_rng() -> dict[str, Any]:
    """The current states of every random-number generator a run may use."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generator states captured by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random`` (the runner calls this before ``build``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` with ``torch.save`` atomically (temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    # weights_only=False: the payload holds numpy / python RNG states, and the file is one
    # this runner wrote into the user's own run directory.
    return torch.load(path, map_location="cpu", weights_only=False)


def state_of(obj: Any) -> Any:
    """``obj.state_dict()`` when the object has one, else ``None`` (nothing to save)."""
    fn = getattr(obj, "state_dict", None)
    return fn() if callable(fn) else None


def load_state_of(obj: Any, state: Any, what: str) -> None:
    """``obj.load_state_dict(state)``, with an error naming ``what`` when it cannot."""
    if state is None:
        return
    fn = getattr(obj, "load_state_dict", None)
    if not callable(fn):
        raise TypeError(f"checkpoint holds a state for {what}, but it has no load_state_dict")
    fn(state)
