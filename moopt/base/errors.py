"""Exceptions raised by moopt. Every message names the offending value."""

from __future__ import annotations


class MooptError(Exception):
    """Base class for moopt errors."""


class UnknownNameError(MooptError, ValueError):
    """A name was looked up in a registry that does not hold it."""


class StateMismatchError(MooptError, ValueError):
    """A saved optimizer state does not fit the optimizer it is loaded into."""


class NonFiniteGradientError(MooptError, FloatingPointError):
    """A gradient holds NaN or infinity and the optimizer is set to refuse it."""


# Their public home is moopt.errors (a re-export of this module): tracebacks, pickles and
# doctests name them there, as before the base layer existed.
for _cls in (MooptError, UnknownNameError, StateMismatchError, NonFiniteGradientError):
    _cls.__module__ = "moopt.errors"
del _cls
