"""Checkpoint manifests: the size and SHA-256 of every file of a checkpoint, recorded when it
is written and checked before any of it is read.

A flipped bit, a truncated or empty file, a missing or foreign file then gives one
:class:`CheckpointError` naming the file and what is wrong, instead of a model that trains
on damaged state or a raw traceback from deep inside a loader.

What a manifest proves: the files are the ones written next to it. It does not prove who
wrote them; anyone who can write into the directory can write a matching manifest too. What
keeps a crafted file from running code is that moopt never unpickles arbitrary objects
(see :mod:`moopt.safe_load`).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "state.pt").write_bytes(b"abc")
    >>> files = describe_files(d, ["state.pt"])
    >>> files["state.pt"]["size"]
    3
    >>> verify_files(d, files)
    >>> _ = (d / "state.pt").write_bytes(b"abd")
    >>> verify_files(d, files)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    moopt.integrity.CheckpointError: .../state.pt: damaged: its SHA-256 differs from the ...
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from moopt.errors import MooptError

_CHUNK = 1 << 20


class CheckpointError(MooptError, ValueError):
    """A checkpoint is damaged, incomplete or not trusted; the message names the file."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class HashingWriter:
    """A binary file wrapper that hashes what passes through ``write`` (so a file can be
    verified against the bytes that were meant to be written, not the ones read back)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self.size += len(view)
        return self._f.write(view)

    def flush(self) -> None:
        self._f.flush()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of one file."""
    return {"size": os.path.getsize(path), "sha256": sha256_file(path)}


def describe_files(root: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Manifest entries of the files ``names`` (paths relative to ``root``)."""
    return {name: file_entry(Path(root) / name) for name in sorted(names)}


def check_entry(path: Path, entry: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``path`` has the size and SHA-256 of
    ``entry``."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (the manifest lists it)") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read: {err.strerror or err}") from None
    want = entry.get("size")
    if size != want:
        what = "empty" if size == 0 else "truncated" if isinstance(want, int) and size < want \
            else "damaged"
        raise CheckpointError(f"{path}: {what}: {size} bytes, the manifest says {want}")
    try:
        digest = sha256_file(path)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read: {err.strerror or err}") from None
    if digest != entry.get("sha256"):
        raise CheckpointError(f"{path}: damaged: its SHA-256 differs from the manifest's "
                              f"({digest[:12]}... != {str(entry.get('sha256'))[:12]}...)")


def verify_files(root: Path, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Check every file of a manifest; the first problem raises :class:`CheckpointError`."""
    if not isinstance(files, Mapping) or not files:
        raise CheckpointError(f"{root}: the manifest lists no files")
    for name, entry in files.items():
        if not isinstance(entry, Mapping) or Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"{root}: the manifest's entry {name!r} is malformed")
        check_entry(Path(root) / name, entry)
