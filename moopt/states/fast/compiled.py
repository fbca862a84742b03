"""Compiled kernels, built in the background and cached so that no step waits for them.

``torch.compile`` takes tens of seconds on a CPU (a C++ build) and seconds on a GPU. A step
that could use a compiled kernel asks :func:`get` for it: the first request starts the
compilation in a background thread on small stand-in tensors (``dynamic=True``, so the one
kernel serves every size) and returns None; until it is ready the caller runs the same
kernel eagerly. Compiled kernels live for the process, and inductor's on-disk cache makes the
next process's build fast.

Environment: ``MOOPT_COMPILE=0`` never compiles; ``MOOPT_COMPILE=sync`` compiles in the
calling thread on first use (benchmarks, tests of the compiled path).

Example:
    >>> from moopt.states.fast import compiled
    >>> compiled.mode() in ("background", "sync", "off")
    True
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

_lock = threading.Lock()
_entries: dict[Any, _Entry] = {}


def mode() -> str:
    """"background" (default), "sync" or "off", from ``MOOPT_COMPILE``."""
    value = os.environ.get("MOOPT_COMPILE", "1").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    return "sync" if value == "sync" else "background"


class _Entry:
    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        self.compiled: Callable[..., None] | None = None  # set by build(), off the hot path
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.thread: threading.Thread | None = None

    def build(self, make_args: Callable[[], tuple]) -> None:
        try:
            kernel = torch.compile(self.fn, dynamic=True, fullgraph=True)
            with torch.no_grad():
                kernel(*make_args())
            self.compiled = kernel
        except Exception as exc:  # no compiler, unsupported device...: stay eager
            self.failed = exc
            warnings.warn(f"moopt: compiling a fast kernel failed ({type(exc).__name__}: "
                          f"{exc}); using the eager kernel", RuntimeWarning, stacklevel=2)
        finally:
            self.ready.set()


def get(key: Any, fn: Callable[..., None],
        make_args: Callable[[], tuple]) -> Callable[..., None] | None:
    """The compiled ``fn`` for ``key`` if it is built, else None (starting the build).

    ``make_args`` makes small inputs of the same kinds (dtypes, devices, storage layouts)
    as the real ones, for the build.
    """
    how = mode()
    if how == "off":
        return None
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            entry = _entries[key] = _Entry(fn)
            if how == "sync":
                entry.build(make_args)
            else:
                entry.thread = threading.Thread(target=entry.build, args=(make_args,),
                                                name="moopt-compile", daemon=True)
                entry.thread.start()
    if entry.ready.is_set() and entry.compiled is not None:
        return entry.compiled
    return None


def wait(timeout: float | None = None) -> bool:
    """Block until every started build finished; True if all are ready and none failed."""
    with _lock:
        entries = list(_entries.values())
    done = all(e.ready.wait(timeout) for e in entries)
    return done and all(e.compiled is not None for e in entries)


def pending() -> int:
    """Number of builds still running."""
    with _lock:
        return sum(not e.ready.is_set() for e in _entries.values())
