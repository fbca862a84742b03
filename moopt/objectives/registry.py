"""The objective registry: ``register_objective``, ``get_objective``, ``list_objectives``.

Example (a custom objective in a few lines):
    >>> import torch
    >>> from moopt.objectives import get_objective, register_objective, OBJECTIVES
    >>> @register_objective("doc_l2", role="retain", description="L2 of the outputs")
    ... def doc_l2(model, batch, ctx, *, scale: float = 1.0):
    ...     return scale * model(batch["x"]).pow(2).mean()
    >>> obj = get_objective("doc_l2", scale=0.5)
    >>> float(obj(torch.nn.Identity(), {"x": torch.ones(2, 2)}))
    0.5
    >>> OBJECTIVES.unregister("doc_l2")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moopt.base.registry import Registry
from moopt.objectives.base import (
    ROLES,
    LossFn,
    Objective,
    ObjectiveInfo,
    ObjectiveSpec,
    keyword_defaults,
)

OBJECTIVES: Registry[ObjectiveSpec] = Registry("objective")
"""All registered objectives, by name (values are ``ObjectiveSpec``)."""


def register_objective(
    name: str,
    *,
    role: str = "any",
    needs_reference: bool = False,
    description: str | None = None,
    overwrite: bool = False,
) -> Callable[[LossFn], LossFn]:
    """Decorator registering ``fn(model, batch, ctx, *, hparam=default, ...)`` under ``name``.

    ``role`` is ``"forget"``, ``"retain"`` or ``"any"``; ``needs_reference=True`` makes
    calls without ``ctx.ref_model`` fail with a clear error before the loss runs. The
    description defaults to the first line of the function's docstring. The function is
    returned unchanged, so it can still be called directly.
    """
    if role not in ROLES:
        raise ValueError(f"objective {name!r}: role must be one of {ROLES}, got {role!r}")

    def add(fn: LossFn) -> LossFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        desc = description if description is not None else (doc[0] if doc else "")
        info = ObjectiveInfo(
            name=name,
            role=role,
            needs_reference=bool(needs_reference),
            description=desc,
            defaults=keyword_defaults(fn),
        )
        OBJECTIVES.register(name, ObjectiveSpec(fn=fn, info=info), overwrite=overwrite)
        return fn

    return add


def get_objective(name: str, **hparams: Any) -> Objective:
    """The objective registered as ``name`` with ``hparams`` overriding its defaults.

    ``get_objective("npo", beta=0.2)``; unknown names or hyperparameters raise an error
    that lists the valid ones.
    """
    return OBJECTIVES.get(name).bind(**hparams)


def objective_info(name: str) -> ObjectiveInfo:
    """Metadata (role, needs_reference, description, hyperparameter defaults) of ``name``."""
    return OBJECTIVES.get(name).info


def list_objectives(role: str | None = None) -> list[str]:
    """Sorted names of registered objectives; with ``role``, those usable in that role.

    ``role="forget"`` lists objectives whose role is ``"forget"`` or ``"any"``.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES} or None, got {role!r}")
    names = OBJECTIVES.names()
    if role is None or role == "any":
        return names if role is None else [n for n in names if OBJECTIVES.get(n).info.role == "any"]
    return [n for n in names if OBJECTIVES.get(n).info.role in (role, "any")]
