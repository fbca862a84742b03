"""Finding task adapters: the ``moopt.tasks`` entry points, plus tasks registered in code.

A package declares its adapters in its ``pyproject.toml``::

    [project.entry-points."moopt.tasks"]
    my-task = "my_pkg.adapter:MyTask"

Code (tests, notebooks) can also call :func:`register_task`, and the command line accepts
``module.path:ClassName`` for a task that is not declared anywhere (imported as ``python -m``
would: from the working directory too).

Example:
    >>> from moopt.runner.discovery import list_tasks
    >>> "unlearning" in list_tasks()
    True
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

from moopt.errors import UnknownNameError
from moopt.registry import Registry
from moopt.runner.task import TaskAdapter

ENTRY_POINT_GROUP = "moopt.tasks"

TASKS: Registry[type[TaskAdapter]] = Registry("task")


def register_task(cls: type[TaskAdapter], *, overwrite: bool = False) -> type[TaskAdapter]:
    """Make ``cls`` available under ``cls.name`` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, TaskAdapter)):
        raise TypeError(f"register_task needs a TaskAdapter subclass, got {cls!r}")
    TASKS.register(cls.name, cls, overwrite=overwrite)
    return cls


def _entry_points() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_tasks() -> list[str]:
    """Names of every declared or registered task (declared ones may fail to import)."""
    return sorted(set(_entry_points()) | set(TASKS.names()))


def _check(cls: object, origin: str) -> type[TaskAdapter]:
    if not (isinstance(cls, type) and issubclass(cls, TaskAdapter)):
        raise TypeError(f"{origin} is not a moopt TaskAdapter subclass: {cls!r}")
    return cls


def _import_from_cwd(module_name: str) -> object:
    """Import ``module_name`` as ``python -m`` would, with the working directory on the path
    (the ``moopt`` console script does not put it there), so that ``moopt run
    my_task:MyTask`` finds ``./my_task.py``. The path is restored afterwards."""
    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        return importlib.import_module(module_name)
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(cwd)


def get_task_class(name: str) -> type[TaskAdapter]:
    """The adapter class of a task name (or of ``"module.path:ClassName"``)."""
    if name in TASKS:
        return TASKS.get(name)
    eps = _entry_points()
    if name in eps:
        ep = eps[name]
        try:
            cls = ep.load()
        except Exception as err:
            raise ImportError(
                f"task {name!r} is declared ({ep.value}) but cannot be imported: "
                f"{type(err).__name__}: {err}"
            ) from err
        return _check(cls, f"entry point {name!r} ({ep.value})")
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = _import_from_cwd(module_name)
        except ImportError as err:
            raise UnknownNameError(
                f"task {name!r}: cannot import module {module_name!r}: {err}"
            ) from err
        if not hasattr(module, attr):
            raise UnknownNameError(f"task {name!r}: module {module_name!r} has no {attr!r}")
        return _check(getattr(module, attr), f"task {name!r}")
    known = ", ".join(list_tasks()) or "(none)"
    raise UnknownNameError(f"unknown task {name!r}; known tasks: {known}")


def get_task(name: str) -> TaskAdapter:
    """A fresh adapter instance for a task name."""
    return get_task_class(name)()
