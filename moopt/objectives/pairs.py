"""Parse ``"forget+retain"`` pair names such as ``"npo+gd"``.

Example:
    >>> from moopt.objectives import parse_pair
    >>> parse_pair("npo+gd")
    ('npo', 'gd')
    >>> parse_pair(" IDK + AP ")
    ('idk', 'ap')
"""

from __future__ import annotations

from moopt.base.errors import UnknownNameError
from moopt.objectives.registry import OBJECTIVES, list_objectives

PAPER_PAIRS = ("me+gd", "idk+ap", "npo+gd", "dpo+gd", "ga+gd")
"""The forget+retain pairings evaluated in the DualOptim(+) papers."""


def _resolve(part: str, slot: str, spec: str) -> str:
    name = part.strip()
    if not name:
        raise ValueError(f"pair {spec!r}: the {slot} objective name is empty")
    if name not in OBJECTIVES and name.lower() in OBJECTIVES:
        name = name.lower()  # accept "NPO+GD" from command lines
    if name not in OBJECTIVES:
        raise UnknownNameError(
            f"pair {spec!r}: unknown {slot} objective {part.strip()!r}; "
            f"{slot} objectives: {', '.join(list_objectives(slot))}"
        )
    role = OBJECTIVES.get(name).info.role
    if role not in (slot, "any"):
        raise ValueError(
            f"pair {spec!r}: {name!r} is a {role} objective and cannot be the {slot} part; "
            f"{slot} objectives: {', '.join(list_objectives(slot))}"
        )
    return name


def parse_pair(spec: str) -> tuple[str, str]:
    """Split ``"forget+retain"`` into two registered objective names, checking their roles.

    Whitespace around names is ignored and names are matched case-insensitively when the
    exact spelling is not registered. Errors name the bad part of the pair.
    """
    if not isinstance(spec, str):
        raise TypeError(f"pair must be a string like 'npo+gd', got {type(spec).__name__}")
    parts = spec.split("+")
    if len(parts) != 2:
        raise ValueError(
            f"pair {spec!r} must have the form 'forget+retain' with exactly one '+', "
            f"e.g. {', '.join(PAPER_PAIRS)}"
        )
    return _resolve(parts[0], "forget", spec), _resolve(parts[1], "retain", spec)
