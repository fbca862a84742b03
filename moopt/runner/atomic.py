"""Atomic file writes: a temporary file beside the target, then one rename, so a crash never
leaves a half-written result.

The temporary file has a unique name (``.<name>.tmp-<pid>-<random>``), so two writers never
share one, and it is flushed to disk (``fsync``) before the rename, so after a power loss
the target holds the old or the new content, never a truncated one.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
    >>> write_json_atomic(path, {"loss": 0.5})
    >>> path.read_text()
    '{\\n  "loss": 0.5\\n}\\n'
    >>> [p.name for p in path.parent.iterdir()]  # no temporary file left
    ['metrics.json']
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def temp_name(path: Path) -> Path:
    """A fresh name beside ``path`` for a file that will replace it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """``with replacing(path) as f: f.write(...)``: ``path`` is replaced when the block ends
    normally and left untouched when it raises."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename."""
    with replacing(path) as f:
        f.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as indented, key-sorted JSON."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
