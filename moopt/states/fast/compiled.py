"""Compiled fused functions: built synchronously on first use, cached for the process (and
on disk by inductor's caches), so the kernel that steps a parameter never depends on timing.

``torch.compile`` takes seconds to tens of seconds per function on a CPU (a C++ build; much
less once inductor's on-disk cache holds it) and seconds on a GPU. Each function is compiled
with ``dynamic=True`` (one build serves every tensor size) and ``fullgraph=True``, as its own
code object so that functions never share dynamo's per-code cache. If a build fails (no C
compiler, an unsupported device), a warning says why and the function runs eagerly from then
on: the same inputs always take the same kernel.

Environment: ``MOOPT_COMPILE=0`` never compiles (the fused function runs eagerly; the test
suite's setting); anything else compiles on first use (``sync``, the old explicit spelling,
is accepted).

Example:
    >>> from moopt.states.fast import compiled
    >>> compiled.mode() in ("sync", "off")
    True
"""

from __future__ import annotations

import os
import threading
import time
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

_lock = threading.Lock()
_entries: dict[Any, Kernel] = {}


def mode() -> str:
    """"sync" (default: compile on first use) or "off", from ``MOOPT_COMPILE``."""
    value = os.environ.get("MOOPT_COMPILE", "1").strip().lower()
    return "off" if value in ("0", "off", "false", "no") else "sync"


class Kernel:
    """A fused function and, once built, its compiled form.

    ``seconds`` is how long the first call (the build) took; ``failure`` why the build
    failed, if it did (the eager function runs then).
    """

    def __init__(self, fn: Callable[..., None], name: str) -> None:
        code = fn.__code__.replace(co_name=name)  # a code object of its own: its own cache
        self.fn = types.FunctionType(code, fn.__globals__, name, fn.__defaults__,
                                     fn.__closure__)
        self.compiled: Callable[..., None] | None = None
        self.seconds: float | None = None
        self.failure: str | None = None

    def __call__(self, *args: Any) -> str:
        """Run on ``args``; returns "compiled" or "eager" (what ran)."""
        if self.failure is None and self.compiled is None:
            self._build_and_run(args)
            return "compiled" if self.failure is None else "eager"
        if self.compiled is not None:
            self.compiled(*args)
            return "compiled"
        self.fn(*args)
        return "eager"

    def _build_and_run(self, args: tuple) -> None:
        start = time.perf_counter()
        try:
            # Sizes stay symbolic (one build for every tensor size), but Python ints the
            # function reads (an 8-bit codec's block size) are compiled in as constants:
            # as symbolic inputs they turn every block index into 64-bit divisions in the
            # generated loops (3x slower 8-bit steps on a CPU).
            kernel = _static_ints(torch.compile(self.fn, dynamic=True, fullgraph=True))
            kernel(*args)  # compiles, then runs: a failure leaves the inputs untouched
        except Exception as exc:  # no compiler, unsupported device...: eager from now on
            self.failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            warnings.warn(f"moopt: compiling {self.fn.__name__} failed ({self.failure}); it "
                          "runs eagerly", RuntimeWarning, stacklevel=3)
            self.fn(*args)
        else:
            self.compiled = kernel
        self.seconds = time.perf_counter() - start


def _static_ints(kernel: Callable[..., None]) -> Callable[..., None]:
    """``kernel`` traced (and re-traced, should a guard fail) with int inputs specialized."""
    return torch._dynamo.config.patch(specialize_int=True)(kernel)


def get(key: Any, make: Callable[[], Callable[..., None]]) -> Kernel:
    """The kernel for ``key``, made by ``make()`` the first time."""
    with _lock:
        kernel = _entries.get(key)
        if kernel is None:
            kernel = _entries[key] = Kernel(make(), f"moopt_fused_{len(_entries)}")
        return kernel


def build_seconds() -> dict[str, float]:
    """Seconds each compiled kernel's first call took (the build), by kernel name."""
    with _lock:
        return {k.fn.__name__: k.seconds for k in _entries.values() if k.seconds is not None
                and k.compiled is not None}
