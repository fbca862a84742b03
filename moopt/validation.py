"""Checks of the optimizer's arguments. Each error names the offending value."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

# Objective names become parts of state-dict keys ("m/<objective>#<part>").
_FORBIDDEN_IN_NAMES = ("/", "#")


def check_objectives(objectives: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(objectives, str):
        raise TypeError(f"objectives must be a list of names, got the string {objectives!r}")
    names = tuple(objectives)
    if not names:
        raise ValueError("objectives is empty; name at least one objective, e.g. ['forget']")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"objective names must be non-empty strings, got {name!r}")
        if any(ch in name for ch in _FORBIDDEN_IN_NAMES):
            raise ValueError(f"objective name {name!r} must not contain '/' or '#'")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"objective {name!r} is listed twice in {list(names)}")
        seen.add(name)
    return names


def check_objective(name: object, objectives: tuple[str, ...]) -> str:
    if name not in objectives:
        raise ValueError(f"unknown objective {name!r}; this optimizer's objectives are "
                         f"{list(objectives)}")
    return name  # type: ignore[return-value]


def _number(key: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{key} must be a number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be finite, got {value!r}")
    return float(value)


def _nonnegative(key: str, value: Any) -> None:
    if _number(key, value) < 0:
        raise ValueError(f"{key} must be >= 0, got {value!r}")


def _betas(key: str, value: Any) -> None:
    try:
        b1, b2 = value
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a pair (beta1, beta2), got {value!r}") from None
    for i, b in enumerate((b1, b2)):
        if not 0.0 <= _number(f"{key}[{i}]", b) < 1.0:
            raise ValueError(f"{key}[{i}] must be in [0, 1), got {b!r}")


def complete_lr_ratios(ratios: Mapping[str, Any] | None,
                       objectives: tuple[str, ...]) -> dict[str, float]:
    """Check ``ratios`` and fill the objectives it does not name with 1.0."""
    ratios = {} if ratios is None else ratios
    if not isinstance(ratios, Mapping):
        raise TypeError(f"lr_ratios must be a mapping objective -> ratio, got {ratios!r}")
    for name, ratio in ratios.items():
        if name not in objectives:
            raise ValueError(f"lr_ratios names unknown objective {name!r}; objectives are "
                             f"{list(objectives)}")
        _nonnegative(f"lr_ratios[{name!r}]", ratio)
    return {name: float(ratios.get(name, 1.0)) for name in objectives}


def check_group(group: Mapping[str, Any], objectives: tuple[str, ...]) -> None:
    """Validate the hyperparameters of one param group (raises before anything changes)."""
    _nonnegative("lr", group["lr"])
    _nonnegative("eps", group["eps"])
    _nonnegative("weight_decay", group["weight_decay"])
    _nonnegative("bridge_guard", group["bridge_guard"])
    _betas("betas", group["betas"])
    _betas("base_betas", group["base_betas"])
    complete_lr_ratios(group["lr_ratios"], objectives)


def check_weights(weights: Mapping[str, Any] | None,
                  objectives: tuple[str, ...]) -> dict[str, float]:
    """Joint-mode weights: every named objective known, every weight finite and >= 0."""
    weights = {} if weights is None else weights
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights must be a mapping objective -> weight, got {weights!r}")
    for name, w in weights.items():
        check_objective(name, objectives)
        _nonnegative(f"weights[{name!r}]", w)
    return {name: float(weights.get(name, 1.0)) for name in objectives}


def check_params(params: Iterable[torch.Tensor]) -> None:
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"parameter {i} is not a tensor: {type(p).__name__}")
        if not p.is_floating_point():
            raise TypeError(f"parameter {i} has dtype {p.dtype}; moopt optimizes floating-point "
                            "parameters only")
