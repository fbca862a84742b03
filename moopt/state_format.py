"""How a parameter's optimizer state is made, and how a saved state is checked.

The keys follow :mod:`moopt.states.layout` (counters ``"T"``, ``"t/<k>"``; buffer parts
``"<buffer key>"`` / ``"<buffer key>#<part>"``); the buffers are the policy's declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moopt.errors import StateMismatchError
from moopt.states.layout import buffer_slots, counter_key, gather_parts, part_key
from moopt.states.policy import BufferSpec
from moopt.states.storage import StorageBackend

__all__ = ["buffer_slots", "check_saved_state", "clone_state", "describe_storage",
           "gather_parts", "new_state", "part_key", "tensor_bytes"]


def new_state(param: Tensor, specs: Mapping[str, BufferSpec], objectives: tuple[str, ...],
              storage: Mapping[str, StorageBackend]) -> dict[str, Any]:
    """Zero state of one parameter: counters and every buffer's parts."""
    state: dict[str, Any] = {"T": 0}
    state.update({counter_key(k): 0 for k in objectives})
    for spec, obj in buffer_slots(specs, objectives):
        parts = storage[spec.role].allocate(param, signed=spec.signed)
        for part, tensor in parts.items():
            state[part_key(spec.key(obj), part)] = tensor
    return state


def check_saved_state(index: int, param: Tensor, saved: Mapping[str, Any],
                      specs: Mapping[str, BufferSpec], objectives: tuple[str, ...],
                      storage: Mapping[str, StorageBackend]) -> None:
    """Raise StateMismatchError unless ``saved`` has exactly the layout this optimizer uses."""
    expected = new_state(param.detach().to("meta"), specs, objectives, storage)
    missing = sorted(set(expected) - set(saved))
    extra = sorted(set(saved) - set(expected))
    if missing or extra:
        raise StateMismatchError(
            f"saved state of parameter {index} does not fit this optimizer: missing keys "
            f"{missing}, unexpected keys {extra} (different policy, objectives or storage?)")
    for key, want in expected.items():
        got = saved[key]
        if isinstance(want, Tensor):
            if not isinstance(got, Tensor):
                raise StateMismatchError(f"state of parameter {index}: {key!r} should be a "
                                         f"tensor, got {type(got).__name__}")
            if got.shape != want.shape or got.dtype != want.dtype:
                raise StateMismatchError(
                    f"state of parameter {index}: {key!r} has shape {tuple(got.shape)} and "
                    f"dtype {got.dtype}; this optimizer stores {tuple(want.shape)} {want.dtype}")
        elif not isinstance(got, int) or got < 0:
            raise StateMismatchError(f"state of parameter {index}: counter {key!r} should be a "
                                     f"non-negative int, got {got!r}")


def tensor_bytes(t: Tensor) -> int:
    """Bytes held by a state tensor on this process (local shard for distributed tensors)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def describe_storage(storage: Mapping[str, StorageBackend]) -> dict[str, Any]:
    return {role: {"name": backend.name or type(backend).__name__, "config": backend.config()}
            for role, backend in storage.items()}


def clone_state(value: Any, device: torch.device | None) -> Any:
    if isinstance(value, Tensor):
        value = value.detach()
        return value.to(device).clone() if device is not None else value.clone()
    return value
