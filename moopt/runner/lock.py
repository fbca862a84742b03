"""An exclusive lock on a directory, held for the whole life of the run that writes into it.

Two processes writing one run directory would interleave their history, overwrite each
other's checkpoints, or delete a live run (``--overwrite``). :class:`DirLock` prevents that:
the first process to lock a directory holds it until it releases it or exits, however it
exits (the operating system drops the lock of a dead process, so a crash or ``kill -9``
never leaves a stale lock behind). A second process is refused with an error naming the
holder's pid and host.

The lock is ``flock`` on the file ``.moopt.lock`` inside the directory. The file is never
deleted (deleting it could let two processes lock two different files of one name); it
holds the holder's pid, host and start time, for messages only. Where ``fcntl`` is missing
(Windows), the file itself is the lock, created exclusively; a lock file left by a dead
process of the same host is recognised by its pid and taken over.

Limits: ``flock`` on a network filesystem works only where the filesystem implements it
(NFSv4 and Lustre with ``flock`` mounts do; older NFS and some FUSE mounts do not, and then
two hosts can both "hold" the lock). The lock guards against moopt processes only.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> with DirLock(d):
    ...     lock_holder(d)["pid"] == os.getpid()
    True
    >>> lock_holder(d) is None
    True
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from moopt.errors import MooptError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".moopt.lock"


class DirLockedError(MooptError, FileExistsError):
    """The directory is locked by another live process."""


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return f"pid {info.get('pid')} on host {info.get('host')!r} (since {since})"


def _read_info(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class DirLock:
    """An exclusive, non-blocking lock on ``directory`` (which must exist).

    ``acquire()`` raises :class:`DirLockedError` naming the holder when another process
    holds it; ``release()`` (or leaving the ``with`` block, or exiting) frees it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirLock:
        if self._fd is not None:
            return self
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        if fcntl is None:
            self._fd = self._acquire_pid_file(info)
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DirLockedError(
                f"{str(self.directory)!r} is in use by {_describe(_read_info(self.path))}; "
                "wait for that run to end, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        self._fd = fd
        return self

    def _acquire_pid_file(self, info: dict[str, Any]) -> int:
        # No flock: the file's existence is the lock; a dead holder of this host is stale.
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                old = _read_info(self.path)
                stale = (old is not None and old.get("host") == info["host"]
                         and isinstance(old.get("pid"), int) and not _pid_alive(old["pid"]))
                if not stale:
                    raise DirLockedError(
                        f"{str(self.directory)!r} is in use by {_describe(old)}; wait for "
                        "that run to end, or choose another --out") from None
                self.path.unlink(missing_ok=True)
                continue
            os.write(fd, json.dumps(info).encode())
            return fd
        raise DirLockedError(f"{str(self.directory)!r}: could not take the lock file "
                             f"{self.path.name} (another process keeps recreating it)")

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if fcntl is None:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            return
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder(directory: Path) -> dict[str, Any] | None:
    """``{"pid", "host", "since"}`` of the live process holding ``directory``'s lock (this
    process included), or ``None`` when nobody holds it."""
    path = Path(directory) / LOCK_NAME
    if not path.is_file():
        return None
    if fcntl is None:
        info = _read_info(path)
        if info is None:
            return None
        same_host = info.get("host") == socket.gethostname()
        dead = same_host and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"])
        return None if dead else info
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_info(path) or {}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
