"""Atomic publication of on-disk cache entries (stage-1 models and their info).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> tmp = root / "entry.tmp"; tmp.mkdir()
    >>> publish_entry(tmp, root / "entry", {"seed": 0})
    >>> sorted(p.name for p in (root / "entry").iterdir())
    ['info.json']
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def publish_entry(tmp: Path, entry: Path, info: dict[str, Any]) -> None:
    """Write ``info.json`` into the finished temporary directory ``tmp`` and move it to
    ``entry`` in one rename, so readers never see a half-written entry. If another process
    published the same entry first, its copy wins and ``tmp`` is removed."""
    (tmp / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if entry.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(entry)
