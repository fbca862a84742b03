"""How optimizer state is laid out per parameter, and how a saved state is checked.

Per parameter the optimizer keeps a flat dict: ``"T"`` (int, steps taken), ``"t/<k>"``
(int, steps objective k took part in), and each buffer's storage parts under
``"<buffer key>"`` (a plain tensor) or ``"<buffer key>#<part>"`` (e.g. 8-bit codes and
scales). Buffer keys are ``"<name>"`` for shared buffers and ``"<name>/<objective>"`` for
per-objective ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from moopt.errors import StateMismatchError
from moopt.states.policy import BufferSpec
from moopt.states.storage import Parts, StorageBackend


def part_key(buffer_key: str, part: str) -> str:
    return buffer_key if part == "" else f"{buffer_key}#{part}"


def gather_parts(state: Mapping[str, Any], buffer_key: str) -> Parts:
    """The storage parts of one buffer, by part name."""
    prefix = buffer_key + "#"
    parts: Parts = {}
    for key, value in state.items():
        if key == buffer_key:
            parts[""] = value
        elif key.startswith(prefix):
            parts[key[len(prefix):]] = value
    return parts


def buffer_slots(specs: Mapping[str, BufferSpec],
                 objectives: tuple[str, ...]) -> list[tuple[BufferSpec, str | None]]:
    """Every (buffer, objective) pair a parameter holds."""
    slots: list[tuple[BufferSpec, str | None]] = []
    for spec in specs.values():
        if spec.per_objective:
            slots.extend((spec, k) for k in objectives)
        else:
            slots.append((spec, None))
    return slots


def new_state(param: Tensor, specs: Mapping[str, BufferSpec], objectives: tuple[str, ...],
              storage: Mapping[str, StorageBackend]) -> dict[str, Any]:
    """Zero state of one parameter: counters and every buffer's parts."""
    state: dict[str, Any] = {"T": 0}
    state.update({f"t/{k}": 0 for k in objectives})
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
