"""Objective records: the context handed to losses, metadata, and the bound callable.

An objective is a loss ``fn(model, batch, ctx, **hparams) -> scalar Tensor``. Registering it
(see ``moopt.objectives.registry``) stores an ``ObjectiveSpec``; ``get_objective(name,
**hparams)`` binds hyperparameters and returns an ``Objective`` you call as
``objective(model, batch, ctx)``.

Example:
    >>> import torch
    >>> from moopt.objectives import ObjectiveContext, get_objective
    >>> ce = get_objective("ce")
    >>> model = torch.nn.Linear(3, 2)
    >>> loss = ce(model, {"x": torch.randn(4, 3), "y": torch.tensor([0, 1, 1, 0])})
    >>> loss.dim(), ce.info.role, ce.info.needs_reference
    (0, 'any', False)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from moopt.base.errors import MooptError

ROLES = ("forget", "retain", "any")
"""Where an objective may be used: as the forget loss, the retain loss, or either."""


class MissingReferenceModelError(MooptError, ValueError):
    """An objective that compares against a reference model was called without one."""


class BadHyperparameterError(MooptError, ValueError):
    """An objective was given an unknown or invalid hyperparameter."""


@dataclass
class ObjectiveContext:
    """Everything a loss may need besides the model and the batch.

    ``ref_model`` is the frozen reference (for unlearning: the model before unlearning);
    losses evaluate it under ``torch.no_grad()`` and never change its train/eval mode.
    ``extras`` carries anything task-specific (e.g. class weights) for custom objectives.
    """

    ref_model: nn.Module | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectiveInfo:
    """Descriptive metadata of a registered objective."""

    name: str
    role: str
    needs_reference: bool
    description: str
    defaults: Mapping[str, Any]
    """Hyperparameter names and their default values (keyword-only args of the loss)."""


LossFn = Callable[..., Tensor]


@dataclass(frozen=True)
class ObjectiveSpec:
    """What the registry stores: the loss function and its metadata."""

    fn: LossFn
    info: ObjectiveInfo

    def bind(self, **hparams: Any) -> Objective:
        """Return an ``Objective`` with ``hparams`` overriding the defaults."""
        unknown = sorted(set(hparams) - set(self.info.defaults))
        if unknown:
            known = ", ".join(sorted(self.info.defaults)) or "(none)"
            raise BadHyperparameterError(
                f"objective {self.info.name!r} has no hyperparameter(s) {unknown}; "
                f"it accepts: {known}"
            )
        values = {**self.info.defaults, **hparams}
        return Objective(spec=self, hparams=values)


@dataclass(frozen=True)
class Objective:
    """A registered loss with its hyperparameters bound; call it as ``obj(model, batch, ctx)``."""

    spec: ObjectiveSpec
    hparams: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.spec.info.name

    @property
    def info(self) -> ObjectiveInfo:
        return self.spec.info

    def __call__(
        self, model: nn.Module, batch: Mapping[str, Any], ctx: ObjectiveContext | None = None
    ) -> Tensor:
        ctx = ObjectiveContext() if ctx is None else ctx
        if not isinstance(ctx, ObjectiveContext):
            raise TypeError(
                f"objective {self.name!r}: ctx must be an ObjectiveContext, got "
                f"{type(ctx).__name__}"
            )
        if self.info.needs_reference and ctx.ref_model is None:
            raise MissingReferenceModelError(
                f"objective {self.name!r} needs a reference model (the model before "
                "unlearning): pass ObjectiveContext(ref_model=...)"
            )
        return self.spec.fn(model, batch, ctx, **self.hparams)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"Objective({self.name!r}{', ' if args else ''}{args})"


def keyword_defaults(fn: LossFn) -> dict[str, Any]:
    """Keyword-only parameters of ``fn`` with their defaults: the tunable hyperparameters.

    The first three positional parameters are ``(model, batch, ctx)``; every further
    parameter must be keyword-only with a default, so ``get_objective`` can bind it.
    """
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    name = getattr(fn, "__name__", repr(fn))
    if len(positional) != 3:
        raise TypeError(
            f"objective function {name} must take exactly (model, batch, ctx) positionally, "
            f"got {[p.name for p in positional]}"
        )
    defaults: dict[str, Any] = {}
    for p in params:
        if p.kind is p.KEYWORD_ONLY:
            if p.default is p.empty:
                raise TypeError(
                    f"objective function {name}: hyperparameter {p.name!r} needs a default"
                )
            defaults[p.name] = p.default
    return defaults
