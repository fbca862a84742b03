"""Progress of long stages: a tqdm bar on a terminal, one status line per stage otherwise
(a log file or CI output gets ``stage 1: target (1140 steps)``, not a redrawn bar).

Lines and bars go to stderr (after flushing stdout, so that a log holding both keeps their
order). ``bar=False`` (``--no-progress``) keeps the status lines and drops the bars;
``enabled=False`` (ranks other than 0) shows nothing.

Example:
    >>> import io
    >>> from moopt.runner.progress import stage_progress
    >>> log = io.StringIO()
    >>> with stage_progress("evaluate", 4, unit="set", stream=log) as progress:
    ...     for _ in range(4):
    ...         progress.update()
    >>> log.getvalue()
    'evaluate (4 sets)\\n'
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO


class _Silent:
    """The bar's interface, doing nothing (no terminal, or no bars wanted)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass


def status_line(text: str, stream: TextIO | None = None) -> None:
    """Print one status line to ``stream`` (stderr), after flushing stdout."""
    stream = stream or sys.stderr
    sys.stdout.flush()
    print(text, file=stream, flush=True)


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


@contextmanager
def stage_progress(desc: str, total: int | None = None, *, unit: str = "step",
                   bar: bool = True, enabled: bool = True, leave: bool = False,
                   stream: TextIO | None = None) -> Iterator[Any]:
    """Show the progress of one stage; yields an object with ``update(n=1)`` and
    ``set_postfix(...)`` (tqdm's) whatever is shown."""
    stream = stream or sys.stderr
    if not enabled:
        yield _Silent()
        return
    if bar and _isatty(stream):
        from tqdm.auto import tqdm

        progress = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=stream,
                        dynamic_ncols=True)
        try:
            yield progress
        finally:
            progress.close()
        return
    status_line(f"{desc} ({_plural(total, unit)})" if total is not None else desc, stream)
    yield _Silent()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


def eta_text(done: int, total: int, elapsed: float) -> str:
    """``"12 s so far"`` before any item is done, then ``"80 s so far, about 2 min left"``.

    Example:
        >>> eta_text(0, 4, 1.0), eta_text(1, 4, 60.0), eta_text(4, 4, 200.0)
        ('1 s so far', '60 s so far, about 3 min left', '3 min so far')
    """
    text = f"{_duration(elapsed)} so far"
    if 0 < done < total:
        text += f", about {_duration(elapsed / done * (total - done))} left"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
