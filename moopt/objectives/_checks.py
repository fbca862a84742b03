"""Validation shared by the loss functions."""

from __future__ import annotations

import math

from moopt.objectives.base import BadHyperparameterError


def positive(objective: str, name: str, value: float) -> float:
    """``value`` as a float, or an error naming the objective and hyperparameter."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadHyperparameterError(
            f"objective {objective!r}: {name} must be a number, got {value!r}"
        ) from None
    if not (math.isfinite(v) and v > 0):
        raise BadHyperparameterError(
            f"objective {objective!r}: {name} must be a finite number > 0, got {value!r}"
        )
    return v


def finite(objective: str, name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BadHyperparameterError(
            f"objective {objective!r}: {name} must be a number, got {value!r}"
        ) from None
    if not math.isfinite(v):
        raise BadHyperparameterError(
            f"objective {objective!r}: {name} must be finite, got {value!r}"
        )
    return v
