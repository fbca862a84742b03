"""Batches as the runner handles them: moved to the model's device, counted, and cut into
pieces (one per rank of a distributed run).

A batch is a tensor, a list of items, or a dict / tuple (a structure) of those, nested in
any way. Tensors are cut along their first dimension, lists by position; dicts and tuples
are walked into, and anything else (strings, numbers, None) is passed to every piece as
is. Every tensor and list of one batch must have the same length: that is the batch's
number of items.

Example:
    >>> import torch
    >>> from moopt.runner.batches import batch_len, split_batch
    >>> batch = {"x": torch.arange(5), "names": list("abcde"), "tag": "train"}
    >>> batch_len(batch)
    5
    >>> [(p["x"].tolist(), p["names"]) for p in split_batch(batch, 2)]
    [([0, 1, 2], ['a', 'b', 'c']), ([3, 4], ['d', 'e'])]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moopt.errors import MooptError


class BatchError(MooptError, ValueError):
    """A batch the runner cannot count or cut (the message names the lengths found)."""


def move_batch(batch: Any, device: torch.device, float_dtype: torch.dtype | None = None) -> Any:
    """``batch`` with every tensor on ``device``; with ``float_dtype``, floating-point tensors
    are also cast to it (bfloat16 weights need bfloat16 inputs). Integer tensors (token ids,
    labels) keep their dtype. Tensors already in place are returned as they are."""
    if isinstance(batch, Tensor):
        dtype = float_dtype if float_dtype is not None and batch.is_floating_point() else None
        return batch.to(device=device, dtype=dtype, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_batch(v, device, float_dtype) for k, v in batch.items()})
    if isinstance(batch, tuple):
        items = [move_batch(v, device, float_dtype) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    if isinstance(batch, list):
        return [move_batch(v, device, float_dtype) for v in batch]
    return batch


def _lengths(batch: Any, found: set[int]) -> None:
    if isinstance(batch, Tensor):
        if batch.dim() == 0:
            raise BatchError("a batch holds a 0-d tensor, which has no items to count")
        found.add(batch.shape[0])
    elif isinstance(batch, Mapping):
        for value in batch.values():
            _lengths(value, found)
    elif isinstance(batch, tuple):
        for value in batch:
            _lengths(value, found)
    elif isinstance(batch, list):
        found.add(len(batch))


def batch_len(batch: Any) -> int:
    """The number of items of ``batch`` (see the module docstring); :class:`BatchError`
    when it holds no tensor or list, or tensors and lists of different lengths."""
    found: set[int] = set()
    _lengths(batch, found)
    if len(found) != 1:
        what = "no tensor or list" if not found else f"lengths {sorted(found)}"
        raise BatchError(f"cannot count the items of a batch of type {type(batch).__name__} "
                         f"({what}); the runner cuts tensors along dim 0 and lists by "
                         "position, inside dicts and tuples")
    return found.pop()


def _take(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, (Tensor, list)):
        return batch[start:stop]
    if isinstance(batch, Mapping):
        return type(batch)({k: _take(v, start, stop) for k, v in batch.items()})
    if isinstance(batch, tuple):
        items = [_take(v, start, stop) for v in batch]
        return type(batch)(*items) if hasattr(batch, "_fields") else tuple(items)
    return batch


def piece_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``parts`` contiguous pieces of ``n`` items whose sizes differ by
    at most one, larger pieces first (as ``torch.tensor_split``); some may be empty."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def split_batch(batch: Any, parts: int) -> list[Any]:
    """``batch`` cut into ``parts`` contiguous pieces (see :func:`piece_bounds`)."""
    return [_take(batch, a, b) for a, b in piece_bounds(batch_len(batch), parts)]


def take_piece(batch: Any, start: int, stop: int) -> Any:
    """Items ``[start, stop)`` of ``batch``."""
    return _take(batch, start, stop)
