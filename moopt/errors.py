"""Exceptions raised by moopt (public name; defined in :mod:`moopt.base.errors`)."""

from moopt.base.errors import (
    MooptError,
    NonFiniteGradientError,
    StateMismatchError,
    UnknownNameError,
)

__all__ = ["MooptError", "NonFiniteGradientError", "StateMismatchError", "UnknownNameError"]
