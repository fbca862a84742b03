"""Objectives (losses) and their registry.

Built-in objectives (``list_objectives()``): forget ``ga``, ``npo``, ``simnpo``, ``dpo``,
``idk``, ``me``; retain ``gd``, ``kl``, ``ap``; any role ``sft``, ``ce``. See
docs/objectives.md for formulas and reductions.

Example:
    >>> from moopt.objectives import get_objective, parse_pair
    >>> forget, retain = parse_pair("npo+gd")
    >>> get_objective(forget, beta=0.2)
    Objective('npo', beta=0.2)
"""

from moopt.objectives import forget, generic, retain  # noqa: F401  (register built-ins)
from moopt.objectives.base import (
    ROLES,
    BadHyperparameterError,
    MissingReferenceModelError,
    Objective,
    ObjectiveContext,
    ObjectiveInfo,
    ObjectiveSpec,
)
from moopt.objectives.pairs import PAPER_PAIRS, parse_pair
from moopt.objectives.registry import (
    OBJECTIVES,
    get_objective,
    list_objectives,
    objective_info,
    register_objective,
)

__all__ = [
    "OBJECTIVES",
    "PAPER_PAIRS",
    "ROLES",
    "BadHyperparameterError",
    "MissingReferenceModelError",
    "Objective",
    "ObjectiveContext",
    "ObjectiveInfo",
    "ObjectiveSpec",
    "get_objective",
    "list_objectives",
    "objective_info",
    "parse_pair",
    "register_objective",
]
