"""Atomic file writes: a temporary file beside the target, then one rename, so a crash never
leaves a half-written result.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "metrics.json"
    >>> write_json_atomic(path, {"loss": 0.5})
    >>> path.read_text()
    '{\\n  "loss": 0.5\\n}\\n'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as indented, key-sorted JSON."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
