"""Output-directory safety: never mix two runs' results in one directory, never let two
processes write one directory.

A run directory is recognised by its marker file (``config.json``, the resolved config).
Opening one:

* missing or empty directory: a fresh run.
* directory of a run with the *same* config (ignoring run-time-only fields such as ``out``
  or ``progress``): continued with ``resume=True``; otherwise refused.
* directory of a run with a *different* config: refused, naming the differing keys,
  unless ``overwrite=True``, which deletes the old run's files first (so no file of the
  old run survives next to the new one).
* directory of a run that ended (failed, stopped or killed) before its first training
  step: reused, whatever the config, since it holds no result.
* non-empty directory that is not a run directory: always refused (nothing is deleted).
* directory in use by a live process: always refused, naming the process.

The process that opens a directory holds its lock (:class:`~moopt.runner.lock.DirLock`)
until it calls :meth:`OpenedRunDir.release` or exits. ``run.json`` records the status
(``running``, ``finished``, ``stopped``, ``failed``); :func:`read_status` reports a
``running`` whose process is gone as ``interrupted``.

Example:
    >>> import tempfile, pathlib
    >>> from moopt.runner.config import RunConfig
    >>> from moopt.runner.rundir import open_run_dir
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with open_run_dir(d, RunConfig()) as opened:
    ...     opened.mode
    'fresh'
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from moopt.errors import MooptError
from moopt.runner.atomic import write_json_atomic
from moopt.runner.checkpoint import has_checkpoint, remove_stale
from moopt.runner.config import RUNTIME_FIELDS, RunConfig, write_config
from moopt.runner.lock import LOCK_NAME, DirLock, DirLockedError, lock_holder

STATUS_NAME = "run.json"
Mode = Literal["fresh", "resume"]


class RunDirError(MooptError, FileExistsError):
    """The output directory holds something this run must not overwrite."""


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ (run-time-only fields ignored), as ``key: old -> new``."""
    keys = sorted((set(old) | set(new)) - RUNTIME_FIELDS)
    return [
        f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def read_status(path: Path) -> dict[str, Any] | None:
    """The content of ``path/run.json`` (``None`` if unreadable), with the status of a run
    whose process is gone shown as ``interrupted`` instead of ``running``."""
    try:
        data = json.loads((Path(path) / STATUS_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("status") == "running" and lock_holder(path) is None:
        data = {**data, "status": "interrupted"}
    return data


def _entries(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if p.name != LOCK_NAME]


def _took_a_step(path: Path) -> bool:
    """Whether the run in ``path`` got as far as a training step (a checkpoint, a result,
    or a record in its history)."""
    if has_checkpoint(path) or any((path / p).exists()
                                   for p in ("metrics.json", "results.json", "runs")):
        return True
    try:
        return any(line.strip() for line in (path / "history.jsonl").read_text().splitlines())
    except OSError:
        return False


def _reusable(path: Path) -> bool:
    status = read_status(path)
    ended = status is not None and status.get("status") in ("failed", "stopped", "interrupted")
    return ended and not _took_a_step(path)


def _describe(path: Path) -> str:
    status = read_status(path)
    if not status:
        return ""
    step = f" at step {status['step']}" if isinstance(status.get("step"), int) else ""
    return f" (status {status.get('status')}{step})"


def _decide(path: Path, new: dict[str, Any], resume: bool, overwrite: bool,
            marker: str) -> tuple[Mode, bool]:
    """``(mode, clear)`` for ``path`` by the rules above, or a :class:`RunDirError`."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {str(path)!r} exists and is not a directory")
    if not path.is_dir() or not _entries(path):
        return "fresh", False
    marker_file = path / marker
    if not marker_file.is_file():
        raise RunDirError(
            f"output directory {str(path)!r} is not empty and holds no moopt run "
            f"({marker} missing); choose another --out"
        )
    try:
        old = json.loads(marker_file.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{marker_file}:{err.lineno}: unreadable run config: {err.msg}"
                          ) from None
    if overwrite or _reusable(path):
        return "fresh", True  # a run that ended before its first step holds nothing to keep
    diffs = config_differences(old, new)
    if diffs:
        raise RunDirError(
            f"output directory {str(path)!r} holds another run (config differs: "
            f"{'; '.join(diffs)}); choose another --out or pass --overwrite to replace it"
        )
    if resume:
        return "resume", False
    raise RunDirError(
        f"output directory {str(path)!r} already holds this run{_describe(path)}; pass "
        "--resume to continue it or --overwrite to start again"
    )


def _semantic(cfg: RunConfig | dict[str, Any]) -> dict[str, Any]:
    return cfg.semantic_dict() if isinstance(cfg, RunConfig) else dict(cfg)


def check_run_dir(
    path: Path,
    cfg: RunConfig | dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    marker: str = "config.json",
) -> Mode:
    """What :func:`open_run_dir` would decide, without creating, locking or writing anything
    (so a refusal comes before hours of preparation). Raises the same errors, plus
    :class:`~moopt.runner.lock.DirLockedError` if a live process holds the directory."""
    if resume and overwrite:
        raise ValueError("choose either resume or overwrite, not both")
    path = Path(path)
    mode, _ = _decide(path, _semantic(cfg), resume, overwrite, marker)
    holder = lock_holder(path) if path.is_dir() else None
    if holder is not None:
        DirLock(path).acquire().release()  # raises DirLockedError naming the holder
    return mode


@dataclass
class OpenedRunDir:
    """A run directory this process has opened: its ``mode`` and the held lock."""

    path: Path
    mode: Mode
    lock: DirLock

    def release(self) -> None:
        """Give the directory up (other processes may then open it)."""
        self.lock.release()

    def __enter__(self) -> OpenedRunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _clear_run_dir(path: Path, marker: str) -> None:
    # Delete everything (only after checking it is one of ours) but the lock we hold.
    if not (path / marker).is_file():
        raise RunDirError(f"refusing to delete {str(path)!r}: it is not a moopt run directory")
    for entry in _entries(path):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def open_run_dir(
    path: Path,
    cfg: RunConfig | dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    marker: str = "config.json",
) -> OpenedRunDir:
    """Check ``path`` against the rules above, create it, lock it, write ``marker`` (the
    resolved config) and say whether the run starts fresh or resumes. The caller must
    :meth:`~OpenedRunDir.release` it at the end (or use it as a context manager)."""
    if resume and overwrite:
        raise ValueError("choose either resume or overwrite, not both")
    new = _semantic(cfg)
    path = Path(path)
    _decide(path, new, resume, overwrite, marker)  # refuse before creating anything there
    path.mkdir(parents=True, exist_ok=True)
    lock = DirLock(path).acquire()
    try:
        status = read_status(path)
        if status is not None and status.get("status") == "interrupted":
            write_json_atomic(path / STATUS_NAME, status)  # its process is gone: say so
        # Decide again under the lock: another process may have changed the directory.
        mode, clear = _decide(path, new, resume, overwrite, marker)
        if clear:
            _clear_run_dir(path, marker)
        else:
            remove_stale(path)  # checkpoint folders of a crash while writing one
        if isinstance(cfg, RunConfig):
            write_config(cfg, path / marker)
        else:
            write_json_atomic(path / marker, new)
    except BaseException:
        lock.release()
        raise
    return OpenedRunDir(path, mode, lock)


__all__ = ["DirLockedError", "OpenedRunDir", "RunDirError", "check_run_dir",
           "config_differences", "open_run_dir", "read_status"]
