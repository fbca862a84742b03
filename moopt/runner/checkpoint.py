"""Resumable checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint holds the model and optimizer ``state_dict``, the schedule position, each
objective's batch-stream position, any extra stateful objects of the task, the step, the
metrics so far, and the random-number states of torch (CPU and CUDA), numpy and ``random``.

Layout in the run directory::

    checkpoint.json              the manifest: step, folder, size and SHA-256 of each file
    checkpoints/<step>-<id>/     the checkpoint's files (state.pt)

Writing never endangers the previous checkpoint: the new one goes into a fresh folder, its
files are flushed to disk and read back against the bytes that were written, and only then
does one atomic rename of ``checkpoint.json`` make it current; older folders are deleted
after that. A crash at any moment leaves ``checkpoint.json`` naming a complete checkpoint.

Reading checks every file against the manifest first (a flipped bit, a truncated or empty
file is one :class:`~moopt.integrity.CheckpointError` naming the file), then loads it with
``weights_only=True`` and a small allow-list (:mod:`moopt.safe_load`), so a crafted
checkpoint cannot run code.

Example:
    >>> import random, tempfile, torch
    >>> from pathlib import Path
    >>> from moopt.runner.checkpoint import capture_rng, restore_rng
    >>> state = capture_rng()
    >>> a = torch.rand(2); b = random.random()
    >>> restore_rng(state)
    >>> bool((torch.rand(2) == a).all()) and random.random() == b
    True
    >>> run = Path(tempfile.mkdtemp())
    >>> save_checkpoint(run, {"step": 3, "model": {"w": torch.ones(2)}}, step=3)
    >>> load_checkpoint(run)["model"]["w"].tolist(), checkpoint_step(run)
    ([1.0, 1.0], 3)
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moopt.integrity import CheckpointError, HashingWriter, check_entry, file_entry, verify_files
from moopt.runner.atomic import fsync_dir, write_json_atomic
from moopt.safe_load import load_torch_file

MANIFEST_NAME = "checkpoint.json"
FOLDER = "checkpoints"
STATE_NAME = "state.pt"
LEGACY_NAME = "checkpoint.pt"  # single-file checkpoints of older moopt versions
FORMAT = 1


def capture_rng() -> dict[str, Any]:
    """The current states of every random-number generator a run may use."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generator states captured by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuples(state["python"]))
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    # random.setstate needs tuples; a safe load may hand back lists.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random`` (the runner calls this before ``build``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- writing
def new_folder(run_dir: Path, step: int) -> Path:
    """A fresh, empty folder for the files of a checkpoint of ``step``."""
    folder = Path(run_dir) / FOLDER / f"{step:08d}-{secrets.token_hex(4)}"
    folder.mkdir(parents=True)
    return folder


def write_state(folder: Path, payload: Mapping[str, Any]) -> dict[str, Any]:
    """``torch.save`` ``payload`` into ``folder/state.pt``, flushed to disk; returns its
    manifest entry, computed from the bytes handed to the file."""
    path = Path(folder) / STATE_NAME
    with open(path, "wb") as f:
        writer = HashingWriter(f)
        torch.save(dict(payload), writer)
        f.flush()
        os.fsync(f.fileno())
    return {"size": writer.size, "sha256": writer.sha256}


def commit(run_dir: Path, folder: Path, step: int,
           written: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Make ``folder`` the run's current checkpoint of ``step``.

    Files listed in ``written`` (name -> entry from the writer) are read back and must
    match; other files in the folder (written by someone else, e.g. DCP shards) are
    recorded as they are on disk. Then ``checkpoint.json`` is replaced atomically and the
    older checkpoint folders are deleted."""
    run_dir, folder = Path(run_dir), Path(folder)
    written = dict(written or {})
    files: dict[str, Any] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name in written:
            check_entry(path, written[name])  # verify what reached the disk
            files[name] = dict(written[name])
        else:
            files[name] = file_entry(path)
    missing = sorted(set(written) - set(files))
    if missing:
        raise CheckpointError(f"{folder / missing[0]}: missing right after it was written")
    fsync_dir(folder)
    manifest = {"format": FORMAT, "step": int(step),
                "folder": folder.relative_to(run_dir).as_posix(), "files": files}
    write_json_atomic(run_dir / MANIFEST_NAME, manifest)
    remove_stale(run_dir)


def save_checkpoint(run_dir: Path, payload: Mapping[str, Any], *, step: int) -> None:
    """Write ``payload`` as the run's checkpoint of ``step`` (see the module docstring)."""
    folder = new_folder(run_dir, step)
    try:
        entry = write_state(folder, payload)
        commit(run_dir, folder, step, {STATE_NAME: entry})
    except BaseException:
        if not _is_current(run_dir, folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _is_current(run_dir: Path, folder: Path) -> bool:
    try:
        manifest = json.loads((Path(run_dir) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("folder") == \
        folder.relative_to(run_dir).as_posix()


def remove_stale(run_dir: Path) -> list[str]:
    """Delete checkpoint folders that ``checkpoint.json`` does not name (left by an older
    checkpoint or by a crash while writing one); returns their names. The caller must hold
    the run directory's lock."""
    root = Path(run_dir) / FOLDER
    if not root.is_dir():
        return []
    try:
        current = json.loads((Path(run_dir) / MANIFEST_NAME).read_text()).get("folder")
    except (OSError, ValueError, AttributeError):
        current = None
    removed = []
    for child in root.iterdir():
        if child.relative_to(run_dir).as_posix() == current:
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(child.name)
    return removed


# ----------------------------------------------------------------------------- reading
def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint (of this or an older format)."""
    run_dir = Path(run_dir)
    return (run_dir / MANIFEST_NAME).is_file() or (run_dir / LEGACY_NAME).is_file()


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The checked manifest of ``run_dir``'s checkpoint (files not yet verified)."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        if (run_dir / LEGACY_NAME).is_file():
            raise CheckpointError(
                f"{run_dir / LEGACY_NAME}: written by an older moopt without a manifest; it is "
                "not loaded (it cannot be verified). Start the run again with --overwrite")
        raise CheckpointError(f"{path}: missing (no checkpoint to resume from)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: cannot be read: {err}") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: damaged: not JSON ({err.msg} at line {err.lineno})"
                              ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{path}: not a checkpoint manifest of format {FORMAT} "
                              f"(found {found!r})")
    folder = manifest.get("folder")
    step = manifest.get("step")
    if not isinstance(folder, str) or Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise CheckpointError(f"{path}: damaged: bad folder entry {folder!r}")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: damaged: bad step entry {step!r}")
    return manifest


def checkpoint_step(run_dir: Path) -> int:
    """The step of ``run_dir``'s checkpoint, from its manifest."""
    return int(read_manifest(run_dir)["step"])


def verify_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Check every file of the checkpoint against its manifest; returns the manifest."""
    manifest = read_manifest(run_dir)
    verify_files(Path(run_dir) / manifest["folder"], manifest["files"])
    return manifest


def load_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Verify and read the checkpoint written by :func:`save_checkpoint`."""
    manifest = verify_checkpoint(run_dir)
    path = Path(run_dir) / manifest["folder"] / STATE_NAME
    if STATE_NAME not in manifest["files"]:
        raise CheckpointError(f"{path}: missing from the manifest")
    payload = load_torch_file(path)
    if not isinstance(payload, dict) or payload.get("step") != manifest["step"]:
        got = payload.get("step") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: holds step {got!r}, the manifest says "
                              f"{manifest['step']}")
    return payload


def agreed_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from, the same on every rank, or ``None`` (start fresh).

    Rank 0 decides whether there is one and of which step; every rank then loads it and
    checks that it got that step. A rank that cannot read it (a run directory that is not
    on a filesystem every rank sees, a damaged file) makes every rank raise
    :class:`~moopt.integrity.CheckpointError` naming that rank. Outside a distributed job
    this is :func:`load_checkpoint` when a checkpoint exists."""
    from moopt import distributed as mdist

    run_dir = Path(run_dir)
    if mdist.world_size() == 1:
        return load_checkpoint(run_dir) if has_checkpoint(run_dir) else None
    decision: dict[str, Any] = {"step": None}
    if mdist.is_main_process():
        try:
            if has_checkpoint(run_dir):
                decision = {"step": checkpoint_step(run_dir)}
        except CheckpointError as err:
            decision = {"error": str(err)}
    decision = mdist.broadcast_object(decision)
    if "error" in decision:
        raise CheckpointError(decision["error"])
    if decision["step"] is None:
        return None
    payload = None
    try:
        payload = load_checkpoint(run_dir)
        mine = None if payload["step"] == decision["step"] else (
            f"rank {mdist.rank()} read step {payload['step']} from {run_dir}, rank 0 step "
            f"{decision['step']}")
    except CheckpointError as err:
        mine = f"rank {mdist.rank()} cannot resume: {err} (every rank reads the checkpoint " \
               "itself: the run directory must be on a filesystem every rank sees)"
    problems = [p for p in mdist.gather_object(mine) if p]
    if problems:
        raise CheckpointError("; ".join(problems))
    return payload


# ------------------------------------------------------------------------- task objects
def state_of(obj: Any) -> Any:
    """``obj.state_dict()`` when the object has one, else ``None`` (nothing to save)."""
    fn = getattr(obj, "state_dict", None)
    return fn() if callable(fn) else None


def load_state_of(obj: Any, state: Any, what: str) -> None:
    """``obj.load_state_dict(state)``, with an error naming ``what`` when it cannot."""
    if state is None:
        return
    fn = getattr(obj, "load_state_dict", None)
    if not callable(fn):
        raise TypeError(f"checkpoint holds a state for {what}, but it has no load_state_dict")
    fn(state)
