"""Errors of the multi-task vision adapter; each message names the bad value or file."""

from __future__ import annotations

from moopt.errors import MooptError, UnknownNameError


class DataLayoutError(MooptError, FileNotFoundError):
    """A data root is missing, or lacks a file the loader needs (the message names it)."""


class UnknownTaskError(UnknownNameError):
    """A task name that the chosen dataset does not have."""


class TaskMismatchError(MooptError, ValueError):
    """The model's heads and the optimizer's objectives do not name the same tasks."""


def missing_vision_extra(package: str) -> ImportError:
    """The ImportError raised when an optional vision dependency is not installed."""
    return ImportError(
        f"the multi-task vision tasks need {package!r}; install it with `pip install moopt[vision]`"
    )
