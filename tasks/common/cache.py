"""Atomic publication of on-disk cache entries (stage-1 models and their info).

An entry is built in a temporary folder beside it (:func:`new_temp_entry`) and published
by one rename (:func:`publish_entry`), so readers never see a half-written entry. The
temporary folder's name carries the builder's host and pid; a folder whose builder died
(``kill -9``, a power cut) is an orphan, and the next build on the same host deletes it.
Folders of other hosts (a shared cache) are left alone unless they are over a day old.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> tmp = new_temp_entry(root / "entry")
    >>> publish_entry(tmp, root / "entry", {"seed": 0})
    >>> sorted(p.name for p in (root / "entry").iterdir())
    ['info.json']
    >>> sorted(p.name for p in root.iterdir())
    ['entry']
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

_MARK = ".tmp-"
# A temporary folder of another host (or of an older moopt, without host and pid in its
# name) is an orphan once it is this old: no stage 1 runs for a day.
_FOREIGN_AGE_S = 24 * 3600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_orphan(folder: Path) -> bool:
    tag = folder.name.split(_MARK, 1)[1]
    parts = tag.rsplit("-", 2)  # <host>-<pid>-<ns>; the host may contain '-'
    if len(parts) == 3 and parts[1].isdigit() and parts[0] == socket.gethostname():
        return not _pid_alive(int(parts[1]))
    try:
        return time.time() - folder.stat().st_mtime > _FOREIGN_AGE_S
    except FileNotFoundError:
        return False


def remove_orphans(root: Path) -> list[str]:
    """Delete the temporary folders in ``root`` whose builder is gone; returns their
    names."""
    removed = []
    if not Path(root).is_dir():
        return removed
    for folder in Path(root).iterdir():
        if _MARK in folder.name and folder.is_dir() and _is_orphan(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


def new_temp_entry(entry: Path) -> Path:
    """A new, empty temporary folder to build ``entry`` in (after removing orphans)."""
    entry = Path(entry)
    remove_orphans(entry.parent)
    tmp = entry.with_name(f"{entry.name}{_MARK}{socket.gethostname()}-{os.getpid()}-"
                          f"{time.time_ns()}")
    tmp.mkdir(parents=True)
    return tmp


def publish_entry(tmp: Path, entry: Path, info: dict[str, Any]) -> None:
    """Write ``info.json`` into the finished temporary directory ``tmp`` and move it to
    ``entry`` in one rename, so readers never see a half-written entry. If another process
    published the same entry first, its copy wins and ``tmp`` is removed."""
    (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if entry.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(entry)
