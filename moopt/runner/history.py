"""Metrics history of a run: one JSON object per line in ``history.jsonl``.

Training records look like ``{"step": 12, "objective": "forget", "loss": 0.53}``;
evaluation records like ``{"step": 50, "eval": {"model_utility": 0.41, ...}}``. On resume
the file is cut back to the checkpoint's step so no record is duplicated.

Example:
    >>> import tempfile, pathlib
    >>> from moopt.runner.history import History
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> h = History(d / "history.jsonl")
    >>> h.add({"step": 1, "objective": "a", "loss": 1.0})
    >>> h.add({"step": 2, "objective": "a", "loss": 0.5})
    >>> h.truncate(1); len(History(d / "history.jsonl").records)
    1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moopt.runner.atomic import write_text_atomic


class History:
    """Appends records to memory and (when ``path`` is given) to a JSONL file.

    A last line without its newline is a record torn by a crash in the middle of writing
    it: it is left out of ``records`` (``torn`` holds its text) and disappears at the next
    :meth:`truncate`. Any other unreadable line is an error naming the file and line.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self.torn: str | None = None
        if path is not None and path.is_file():
            lines = path.read_text().split("\n")  # the last item is "" after a final newline
            for lineno, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    if lineno == len(lines):
                        self.torn = line
                        break
                    raise ValueError(f"{path}:{lineno}: broken history record: {err}") from None
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError(f"{path}:{lineno}: a history record must be an object "
                                     f"with an integer 'step', got {line[:80]!r}")
                self.records.append(record)

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate(self, step: int) -> None:
        """Drop records after ``step`` and any torn last line (rewriting the file
        atomically)."""
        self.records = [r for r in self.records if r["step"] <= step]
        self.torn = None
        if self.path is not None:
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def losses(self) -> dict[str, list[tuple[int, float]]]:
        """Training losses per objective as ``[(step, loss), ...]``."""
        out: dict[str, list[tuple[int, float]]] = {}
        for r in self.records:
            if "loss" in r:
                out.setdefault(r["objective"], []).append((r["step"], r["loss"]))
        return out

    def evals(self) -> list[tuple[int, dict[str, float]]]:
        """Evaluation results as ``[(step, metrics), ...]``."""
        return [(r["step"], r["eval"]) for r in self.records if "eval" in r]
