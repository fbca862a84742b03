"""Reading checkpoints without running code from them.

A pickle can call any function while it is read, so a crafted checkpoint could run code
on ``--resume``. moopt therefore never unpickles arbitrary objects:

* ``torch.load`` files are read with ``weights_only=True`` (tensors, containers, numbers,
  strings) plus the explicit allow-list :data:`TORCH_GLOBALS`: numpy arrays, numpy scalars
  and the dtypes of numbers, which real checkpoints need for numpy's random-number state
  and for tasks' own state. Nothing on it can run code: it only rebuilds arrays and
  scalars from bytes.
* The metadata file of a ``torch.distributed.checkpoint`` directory (``.metadata``, a plain
  pickle) is read by :func:`loads_dcp_metadata`, which builds only the classes of
  :data:`DCP_GLOBALS` (DCP's metadata records, ``torch.Size``, dtypes, layouts, paths).

Anything else in a file (a reference to ``os.system``, say) is refused with a
:class:`~moopt.integrity.CheckpointError` naming the file and the refused name, before
any of it is built.

Example:
    >>> import os, tempfile, torch
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "ok.pt"
    >>> torch.save({"w": torch.ones(2)}, path)
    >>> load_torch_file(path)["w"].tolist()
    [1.0, 1.0]
    >>> class Crafted:
    ...     def __reduce__(self):
    ...         return (os.system, ("echo pwned",))
    >>> torch.save({"x": Crafted()}, path)
    >>> load_torch_file(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    moopt.integrity.CheckpointError: .../ok.pt: refused: it references system ...
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moopt.integrity import CheckpointError

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]

_NUMBER_DTYPES = ("bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                  "uint64", "float16", "float32", "float64", "complex64", "complex128")

#: What ``torch.load(weights_only=True)`` may build beyond tensors and plain containers.
TORCH_GLOBALS: list[Any] = [np.ndarray, np.dtype, _reconstruct, scalar,
                            *(type(np.dtype(name)) for name in _NUMBER_DTYPES)]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_torch_file(path: Path) -> Any:
    """``torch.load`` of ``path`` onto the CPU with ``weights_only=True`` and the allow-list
    :data:`TORCH_GLOBALS`; any failure is one :class:`CheckpointError` naming the file."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(TORCH_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL (\S+)", text) or re.search(r"got <class '([^']+)'>", text)
        what = found.group(1) if found else _first_line(err)
        if found:
            what = what.rsplit(".", 1)[-1] + f" ({what})"
        raise CheckpointError(f"{path}: refused: it references {what}, which moopt does not "
                              "load (it could run code or is not a checkpoint of moopt)") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        size = path.stat().st_size if path.is_file() else 0
        what = "empty" if size == 0 else f"not a readable torch file ({_first_line(err)})"
        raise CheckpointError(f"{path}: {what}") from None


def _torch_dtypes() -> set[str]:
    return {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}


#: ``(module, name)`` pairs that DCP metadata may reference; dtypes are added at run time.
DCP_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.metadata", "Metadata"),
    ("torch.distributed.checkpoint.metadata", "StorageMeta"),
    ("torch.distributed.checkpoint.metadata", "MetadataIndex"),
    ("torch.distributed.checkpoint.metadata", "ChunkStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "TensorStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "BytesStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "TensorProperties"),
    ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
    ("pathlib._local", "PosixPath"),
    ("pathlib._local", "WindowsPath"),
})


class _DCPMetadataUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: Path) -> None:
        super().__init__(io.BytesIO(data))
        self.source = source
        self.dtypes = _torch_dtypes()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in DCP_GLOBALS or (module == "torch" and name in self.dtypes):
            return super().find_class(module, name)
        raise CheckpointError(f"{self.source}: refused: it references {name} ({module}.{name}),"
                              " which is not part of checkpoint metadata")


def loads_dcp_metadata(data: bytes, source: Path) -> Any:
    """Unpickle DCP ``.metadata`` bytes, building only :data:`DCP_GLOBALS`; ``source``
    names the file in errors."""
    try:
        return _DCPMetadataUnpickler(data, source).load()
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{source}: not readable checkpoint metadata "
                              f"({_first_line(err)})") from None
