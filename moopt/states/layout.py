"""Where a parameter's optimizer state lives in its state dict (one place for the keys).

Per parameter the optimizer keeps a flat dict: ``"T"`` (int, steps taken), ``"t/<k>"``
(int, steps objective k took part in), and each buffer's storage parts under
``"<buffer key>"`` (a plain tensor) or ``"<buffer key>#<part>"`` (e.g. 8-bit codes and
scales). Buffer keys are ``"<name>"`` for shared buffers and ``"<name>/<objective>"`` for
per-objective ones (:meth:`moopt.states.policy.BufferSpec.key`).

Example:
    >>> from moopt.states.layout import gather_parts, part_key
    >>> part_key("m/forget", "codes"), part_key("v", "")
    ('m/forget#codes', 'v')
    >>> sorted(gather_parts({"m/a#codes": 1, "m/a#absmax": 2, "m/b": 3}, "m/a"))
    ['absmax', 'codes']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moopt.states.policy import BufferSpec


def counter_key(objective: str) -> str:
    """The key of objective ``objective``'s step counter."""
    return f"t/{objective}"


def part_key(buffer_key: str, part: str) -> str:
    return buffer_key if part == "" else f"{buffer_key}#{part}"


def gather_parts(state: Mapping[str, Any], buffer_key: str) -> dict[str, Any]:
    """The storage parts of one buffer, by part name."""
    prefix = buffer_key + "#"
    parts: dict[str, Any] = {}
    for key, value in state.items():
        if key == buffer_key:
            parts[""] = value
        elif key.startswith(prefix):
            parts[key[len(prefix):]] = value
    return parts


def buffer_of(key: str) -> tuple[str, str | None]:
    """``(buffer name, objective or None)`` of a state key (``"m/a#codes"`` -> ``("m", "a")``)."""
    name, _, objective = key.split("#", 1)[0].partition("/")
    return name, objective or None


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
