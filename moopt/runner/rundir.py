"""Output-directory safety: never mix two runs' results in one directory.

A run directory is recognised by its ``config.json`` (the resolved config). Opening one:

* missing or empty directory: a fresh run.
* directory of a run with the *same* config (ignoring run-time-only fields such as ``out``
  or ``progress``): continued with ``resume=True``; otherwise refused.
* directory of a run with a *different* config: refused, naming the differing keys,
  unless ``overwrite=True``, which deletes the old run's files first (so no file of the
  old run survives next to the new one).
* directory of a run that failed before writing a checkpoint or result: reused.
* non-empty directory that is not a run directory: always refused (nothing is deleted).

Example:
    >>> import tempfile, pathlib
    >>> from moopt.runner.config import RunConfig
    >>> from moopt.runner.rundir import open_run_dir
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> open_run_dir(d, RunConfig(), marker="config.json")
    'fresh'
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from moopt.errors import MooptError
from moopt.runner.config import RUNTIME_FIELDS, RunConfig, write_config


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


def _holds_no_results(path: Path) -> bool:
    """A run directory whose run failed before writing any checkpoint or result."""
    try:
        status = json.loads((path / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    produced = {"checkpoint.pt", "metrics.json", "history.jsonl", "runs", "results.json"}
    return status.get("status") == "failed" and not any((path / p).exists() for p in produced)


def _clear_run_dir(path: Path, marker: str) -> None:
    # Delete the whole directory (only after checking it is one of ours), then recreate it.
    if not (path / marker).is_file():
        raise RunDirError(f"refusing to delete {str(path)!r}: it is not a moopt run directory")
    shutil.rmtree(path)
    path.mkdir(parents=True)


def open_run_dir(
    path: Path,
    cfg: RunConfig | dict[str, Any],
    *,
    resume: bool = False,
    overwrite: bool = False,
    marker: str = "config.json",
) -> Literal["fresh", "resume"]:
    """Check ``path`` against the rules above, create it, write ``marker`` (the resolved
    config) and say whether the run starts fresh or resumes."""
    if resume and overwrite:
        raise ValueError("choose either resume or overwrite, not both")
    new = cfg.semantic_dict() if isinstance(cfg, RunConfig) else dict(cfg)
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"output path {str(path)!r} exists and is not a directory")
    mode: Literal["fresh", "resume"] = "fresh"
    if path.is_dir() and any(path.iterdir()):
        marker_file = path / marker
        if not marker_file.is_file():
            raise RunDirError(
                f"output directory {str(path)!r} is not empty and holds no moopt run "
                f"({marker} missing); choose another --out"
            )
        try:
            old = json.loads(marker_file.read_text())
        except json.JSONDecodeError as err:
            raise RunDirError(
                f"{marker_file}:{err.lineno}: unreadable run config: {err.msg}"
            ) from None
        diffs = config_differences(old, new)
        if _holds_no_results(path):
            overwrite = True  # a run that failed before its first checkpoint: nothing to keep
        if overwrite:
            _clear_run_dir(path, marker)
        elif diffs:
            raise RunDirError(
                f"output directory {str(path)!r} holds another run (config differs: "
                f"{'; '.join(diffs)}); choose another --out or pass --overwrite to replace it"
            )
        elif resume:
            mode = "resume"
        else:
            raise RunDirError(
                f"output directory {str(path)!r} already holds this run; pass --resume to "
                "continue it or --overwrite to start again"
            )
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(cfg, RunConfig):
        write_config(cfg, path / marker)
    else:
        tmp = path / (marker + ".tmp")
        tmp.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
        tmp.replace(path / marker)
    return mode
