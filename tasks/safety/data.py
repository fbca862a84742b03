"""Safety data: one record type and loaders for the Safety-Tuned LLaMAs and XSTest files.

Formats read (see ``docs/tasks/safety.md``):

* Safety-Tuned LLaMAs training files: a JSON list of ``{"instruction", "input", "output"}``.
* Safety-Tuned LLaMAs evaluation files: ``{"instructions": [...]}`` with optional parallel
  ``"inputs"`` (and other parallel lists such as ``"tags"``, ignored).
* XSTest: a CSV with at least the columns ``prompt`` and ``label`` (``safe`` / ``unsafe``);
  ``id``, ``type`` and ``focus`` are kept when present.

Every problem is reported as :class:`SafetyDataError` naming the file and, where the file has
one, the line of the bad record. Nothing is returned half-read.

Example:
    >>> from moopt.tasks.safety.data import Example
    >>> Example(instruction="Add 2 and 3.", answer="2 plus 3 is 5.", kind="benign").prompt_text
    'Add 2 and 3.'
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from moopt.errors import MooptError

#: Kinds of example the task knows. ``harmful`` items should be refused, ``benign`` and
#: ``safe_scary`` items should be answered (``safe_scary`` = sounds dangerous, is not).
KINDS = ("harmful", "benign", "safe_scary")


class SafetyDataError(MooptError, ValueError):
    """A safety data file or item set is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One instruction, with an optional input and an optional reference answer.

    ``answer`` is ``None`` for evaluation prompts without a reference.
    ``meta`` holds source-specific fields (XSTest ``type``/``focus``, the source file...).
    """

    instruction: str
    kind: str
    input: str = ""
    answer: str | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SafetyDataError(f"unknown example kind {self.kind!r}; expected one of {KINDS}")

    @property
    def prompt_text(self) -> str:
        """The user turn: the instruction, followed by the input on its own paragraph."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


# --------------------------------------------------------------------------------------
# JSON helpers


def _read_json(path: Path):
    path = Path(path)
    if not path.is_file():
        raise SafetyDataError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text), text
    except json.JSONDecodeError as err:
        raise SafetyDataError(
            f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})"
        ) from None


def _item_lines(text: str) -> list[int]:
    """Line number where each top-level element of a JSON list starts (one pass).

    Used only to point the user at a bad record, so a simple scanner that tracks strings
    and nesting depth is enough.
    """
    lines: list[int] = []
    depth, line = 0, 1
    in_str = escape = False
    expect_item = False
    for ch in text:
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
            continue
        if ch == "\n":
            line += 1
            continue
        if depth == 1 and expect_item and not ch.isspace() and ch not in ",]":
            lines.append(line)
            expect_item = False
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth == 1:
                expect_item = True
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 1:
            expect_item = True
    return lines


class _Where:
    """``file:line (item i)``, with the line found only when an error message needs it."""

    def __init__(self, path: Path, text: str, index: int) -> None:
        self.path, self.text, self.index = path, text, index

    def __str__(self) -> str:
        lines = _item_lines(self.text)
        line = lines[self.index] if self.index < len(lines) else "?"
        return f"{self.path}:{line} (item {self.index})"


def _str_field(item: dict, key: str, where: _Where, *, required: bool) -> str:
    value = item.get(key, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise SafetyDataError(f"{where}: field {key!r} must be a string, got {value!r}")
    if required and not value.strip():
        raise SafetyDataError(f"{where}: field {key!r} is missing or empty")
    return value


def load_instruction_json(path: str | Path, kind: str) -> list[Example]:
    """Load a training file: a JSON list of ``{"instruction", "input", "output"}`` objects.

    ``kind`` labels every item (``"harmful"`` for ``safety_only_data_Instructions.json``,
    ``"benign"`` for Alpaca-style files).
    """
    path = Path(path)
    data, text = _read_json(path)
    if not isinstance(data, list):
        raise SafetyDataError(
            f"{path}:1: expected a JSON list of instruction objects, got {type(data).__name__}"
        )
    if not data:
        raise SafetyDataError(f"{path}: the file holds no items")
    out = []
    for i, item in enumerate(data):
        where = _Where(path, text, i)
        if not isinstance(item, dict):
            raise SafetyDataError(f"{where}: expected an object, got {item!r:.80}")
        out.append(
            Example(
                instruction=_str_field(item, "instruction", where, required=True),
                input=_str_field(item, "input", where, required=False),
                answer=_str_field(item, "output", where, required=True),
                kind=kind,
                meta={"source": path.name},
            )
        )
    return out


def load_prompt_set(path: str | Path, kind: str) -> list[Example]:
    """Load an evaluation file ``{"instructions": [...], "inputs": [...]}`` (no answers)."""
    path = Path(path)
    data, text = _read_json(path)
    if not isinstance(data, dict) or "instructions" not in data:
        raise SafetyDataError(f'{path}:1: expected an object with an "instructions" list')
    instructions = data["instructions"]
    inputs = data.get("inputs") or [""] * len(instructions)
    if not isinstance(instructions, list) or not instructions:
        raise SafetyDataError(f'{path}: "instructions" must be a non-empty list')
    if not isinstance(inputs, list) or len(inputs) != len(instructions):
        raise SafetyDataError(
            f'{path}: "inputs" has {len(inputs) if isinstance(inputs, list) else inputs!r} '
            f"entries but there are {len(instructions)} instructions"
        )
    out = []
    lines = text.splitlines()
    for i, (ins, inp) in enumerate(zip(instructions, inputs)):
        if not isinstance(ins, str) or not ins.strip():
            line = _find_line(lines, ins)
            raise SafetyDataError(f"{path}:{line} (instruction {i}): bad instruction {ins!r}")
        if inp is None:
            inp = ""
        if not isinstance(inp, str):
            raise SafetyDataError(f"{path} (input {i}): input must be a string, got {inp!r}")
        out.append(Example(instruction=ins, input=inp, kind=kind, meta={"source": path.name}))
    return out


def _find_line(lines: list[str], value: object) -> int | str:
    needle = json.dumps(value)
    for n, line in enumerate(lines, start=1):
        if needle in line:
            return n
    return "?"


# --------------------------------------------------------------------------------------
# XSTest

XSTEST_LABELS = {"safe": "safe_scary", "unsafe": "harmful"}


def load_xstest(path: str | Path) -> list[Example]:
    """Load the XSTest prompts CSV; ``safe`` rows become ``safe_scary``, ``unsafe`` ``harmful``.

    The CSV ``type`` (e.g. ``homonyms``) and ``focus`` go to ``meta``; ``meta["label"]`` keeps
    the original XSTest label.
    """
    path = Path(path)
    if not path.is_file():
        raise SafetyDataError(f"{path}: file not found")
    with path.open(encoding="utf-8-sig", newline="") as fh:  # tolerate a BOM
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise SafetyDataError(f"{path}:1: empty CSV file") from None
        except csv.Error as err:
            raise SafetyDataError(f"{path}:1: malformed CSV header ({err})") from None
        missing = {"prompt", "label"} - set(header)
        if missing:
            raise SafetyDataError(
                f"{path}:1: CSV header {header!r} lacks column(s) {sorted(missing)}"
            )
        col = {name: header.index(name) for name in header}
        out = []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise SafetyDataError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise SafetyDataError(
                    f"{path}:{line}: expected {len(header)} columns, got {len(row)}: {row!r:.120}"
                )
            label = row[col["label"]].strip()
            if label not in XSTEST_LABELS:
                raise SafetyDataError(f"{path}:{line}: label {label!r} is not 'safe' or 'unsafe'")
            prompt = row[col["prompt"]]
            if not prompt.strip():
                raise SafetyDataError(f"{path}:{line}: empty prompt")
            meta = {k: row[col[k]] for k in ("id", "type", "focus") if k in col}
            meta.update(label=label, source=path.name)
            out.append(Example(instruction=prompt, kind=XSTEST_LABELS[label], meta=meta))
    if not out:
        raise SafetyDataError(f"{path}: the CSV holds no prompts")
    return out


# --------------------------------------------------------------------------------------
# Validation of an instruction set used for training


def require_kinds(examples: list[Example], kinds: tuple[str, ...], what: str) -> None:
    """Raise if ``examples`` has no item of one of ``kinds`` (e.g. no harmful items)."""
    present = {e.kind for e in examples}
    for kind in kinds:
        if kind not in present:
            raise SafetyDataError(
                f"{what} has no {kind!r} items (found kinds: {sorted(present) or 'none'}); "
                f"safety training needs both harmful and benign examples"
            )
