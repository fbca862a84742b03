"""Loader for the TOFU benchmark files (Maini et al. 2024, as re-split in the DualOptim+ release).

The files are read by path at run time and never copied into the project. Layout of the
folder (every ``.json`` file is JSON lines, one object a line; a JSON array also loads):

- ``forget01/05/10.json``: ``{task_id, question, answer}``. Each file holds several disjoint
  unlearning *tasks* (``task_id`` "1", "2", ...): forget01 has 10 tasks of 40 items
  (2 authors x 20 questions), forget05 10 tasks of 200, forget10 9 tasks of 400.
- ``forgetXX_perturbed.json``: the same items plus ``paraphrased_answer``,
  ``paraphrased_question`` and ``perturbed_answer`` (5 strings): the forget evaluation set.
- ``retain90/50/10.json``: ``{question, answer}`` retain training sets (nested: 10 in 50 in 90).
  retain90 is the complement of forget10 task 1, so for other tasks it overlaps the forget
  set; the loader drops retain items that are in the forget set (same question and answer).
  TOFU's own retain set of a forget split (retain99 / 95 / 90 for forget01 / 05 / 10: every
  item but the forget set) has no file here; ``retain_items`` builds it (the default,
  ``retain_split="auto"``).
- ``retain_perturbed.json``: 400 retain items with paraphrased and 5 perturbed answers: the
  retain evaluation set.
- ``real_authors_perturbed.json`` (100) and ``world_facts_perturbed.json`` (117):
  ``{question, answer, perturbed_answer (3 strings), original_answer}``; ``answer`` is a
  short answer ("William Shakespeare"), ``original_answer`` a full sentence; there is no
  paraphrase, so the truth ratio compares ``answer`` with the perturbations.
- ``idontknow.jsonl``: one refusal answer per line, plain text (JSON strings also accepted).

Example:
    >>> from moopt.tasks.unlearning.tofu import load_tofu
    >>> data = load_tofu("path/to/tofu", "forget01", task_id="1")  # doctest: +SKIP
    >>> len(data.forget), len(data.forget_eval), len(data.retain_eval)   # doctest: +SKIP
    (40, 40, 400)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from moopt.tasks.unlearning.data import (
    DataFormatError,
    QAItem,
    UnlearningData,
    assign_idk_answers,
    sample_items,
)

FORGET_SPLITS = ("forget01", "forget05", "forget10")
RETAIN_FILES = ("retain90", "retain50", "retain10")
# TOFU's retain set of each forget split: everything but the forget set (TOFU's code names it
# "retain" + str(100 - n): forget01 -> retain99, forget05 -> retain95, forget10 -> retain90).
COUNTERPARTS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
RETAIN_SPLITS = ("auto", "retain99", "retain95", *RETAIN_FILES)
DATA_DIR_ENV = "MOOPT_DATA_DIR"


def resolve_tofu_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The TOFU folder: ``data_dir`` (the folder itself or its parent holding ``tofu/``),
    else ``$MOOPT_DATA_DIR/tofu``. Raises FileNotFoundError naming what was tried."""
    if data_dir is None:
        env = os.environ.get(DATA_DIR_ENV)
        if not env:
            raise FileNotFoundError(
                f"no TOFU data folder given and ${DATA_DIR_ENV} is not set; pass data_dir "
                "(the folder holding forget01.json ...) or use the embedded data"
            )
        data_dir = env
    path = Path(data_dir).expanduser()
    if not (path / "forget01.json").exists() and (path / "tofu").is_dir():
        path = path / "tofu"
    if not path.is_dir():
        raise FileNotFoundError(f"TOFU data folder {str(path)!r} does not exist")
    return path


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Objects of a JSON-lines file (or JSON array), each with its location for messages
    ("file:line N" or "file: item i")."""
    if not path.is_file():
        raise FileNotFoundError(f"TOFU file {str(path)!r} not found")
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            array = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(
                f"{path}: invalid JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}"
            ) from None
        located = [(f"{path}: item {i}", obj) for i, obj in enumerate(array)]
    else:
        located = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(
                    f"{path}:{lineno}: invalid JSON at column {e.colno}: {e.msg}"
                ) from None
            located.append((f"{path}:{lineno}", obj))
    if not located:
        raise DataFormatError(f"{path}: file holds no records")
    for where, obj in located:
        if not isinstance(obj, dict):
            raise DataFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return located


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    if key not in obj:
        raise DataFormatError(f"{where}: missing key {key!r} (keys: {sorted(obj)})")
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _perturbed(obj: dict[str, Any], where: str) -> list[str]:
    if "perturbed_answer" not in obj:
        raise DataFormatError(f"{where}: missing key 'perturbed_answer' (keys: {sorted(obj)})")
    value = obj["perturbed_answer"]
    if isinstance(value, str):  # some TOFU versions store a single perturbation
        value = [value]
    if not isinstance(value, list) or not value:
        raise DataFormatError(
            f"{where}: 'perturbed_answer' must be a non-empty list of strings, got {value!r}"
        )
    for j, p in enumerate(value):
        if not isinstance(p, str) or not p.strip():
            raise DataFormatError(f"{where}: perturbed_answer[{j}] is not a string: {p!r}")
    return list(value)


def _task_id(obj: dict[str, Any], where: str) -> str | None:
    value = obj.get("task_id")
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataFormatError(f"{where}: 'task_id' must be a string or int, got {value!r}")


def read_qa_file(path: Path, *, perturbed: bool, paraphrased: bool) -> list[QAItem]:
    """``QAItem``s of one TOFU file; ``perturbed``/``paraphrased`` say which keys it must have."""
    items = []
    for where, obj in read_records(path):
        items.append(
            QAItem(
                question=_string(obj, "question", where),
                answer=_string(obj, "answer", where),
                paraphrased_answer=_string(obj, "paraphrased_answer", where)
                if paraphrased
                else None,
                perturbed_answers=_perturbed(obj, where) if perturbed else [],
                task_id=_task_id(obj, where),
            )
        )
    return items


def read_idk_file(path: Path) -> list[str]:
    """Refusal answers, one a line: plain text, a JSON string, or an object with "answer"."""
    if not path.is_file():
        raise FileNotFoundError(f"TOFU file {str(path)!r} not found")
    answers = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if text[0] in '{"':
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataFormatError(
                    f"{path}:{lineno}: invalid JSON at column {e.colno}: {e.msg}"
                ) from None
            if isinstance(obj, dict):
                obj = obj.get("answer", obj.get("text"))
            if not isinstance(obj, str) or not obj.strip():
                raise DataFormatError(
                    f"{path}:{lineno}: expected a refusal string or an object with an "
                    f"'answer' string, got {text!r}"
                )
            text = obj.strip()
        answers.append(text)
    if not answers:
        raise DataFormatError(f"{path}: file holds no refusal answers")
    return answers


def _select_task(items: list[QAItem], task_id: str | None, path: Path) -> list[QAItem]:
    if task_id is None:
        return items
    chosen = [it for it in items if it.task_id == str(task_id)]
    if not chosen:
        ids = sorted({str(it.task_id) for it in items}, key=lambda s: (len(s), s))
        raise DataFormatError(f"{path}: no item has task_id {task_id!r}; task ids present: {ids}")
    return chosen


def load_tofu(
    data_dir: str | os.PathLike[str] | None = None,
    forget_split: str = "forget01",
    retain_subset: int | None = None,
    seed: int = 0,
    *,
    task_id: str | int | None = "1",
    retain_split: str = "auto",
) -> UnlearningData:
    """Load one TOFU unlearning task.

    ``forget_split`` picks the forget file and ``task_id`` one task in it (None: the whole
    file). The retain set (``retain_split``, see ``retain_items``; default: TOFU's retain
    set of the forget split) is cut to ``retain_subset`` random items (by ``seed``) when
    given. Evaluation sets: the matching
    ``<forget_split>_perturbed.json`` (same task), ``retain_perturbed.json`` (minus forget
    items), real-authors and world-facts. Forget and retain items get an IDK answer
    drawn from ``idontknow.jsonl`` (by ``seed``).
    """
    if forget_split not in FORGET_SPLITS:
        raise ValueError(f"forget_split must be one of {FORGET_SPLITS}, got {forget_split!r}")
    check_retain_split(retain_split, forget_split)
    if retain_subset is not None and (
        not isinstance(retain_subset, int) or isinstance(retain_subset, bool) or retain_subset < 1
    ):
        raise ValueError(f"retain_subset must be a positive int or None, got {retain_subset!r}")
    task = None if task_id is None else str(task_id)
    root = resolve_tofu_dir(data_dir)

    forget_path = root / f"{forget_split}.json"
    forget = _select_task(
        read_qa_file(forget_path, perturbed=False, paraphrased=False), task, forget_path
    )
    eval_path = root / f"{forget_split}_perturbed.json"
    forget_eval = _select_task(
        read_qa_file(eval_path, perturbed=True, paraphrased=True), task, eval_path
    )
    # Items are matched on (question, answer): TOFU repeats a few generic questions ("What is
    # the full name of the author?") for different authors.
    forget_keys = {(it.question, it.answer) for it in forget}
    stray = [it.question for it in forget_eval if (it.question, it.answer) not in forget_keys]
    if stray or len(forget_eval) != len(forget):
        raise DataFormatError(
            f"{eval_path} does not match {forget_path} for task {task!r}: "
            f"{len(forget_eval)} vs {len(forget)} items; first unmatched question {stray[:1]}"
        )

    retain = sample_items(retain_items(root, forget_split, retain_split, forget_keys),
                          retain_subset, seed)
    retain_eval = read_qa_file(root / "retain_perturbed.json", perturbed=True, paraphrased=True)
    retain_eval = [it for it in retain_eval if (it.question, it.answer) not in forget_keys]
    real_authors = read_qa_file(
        root / "real_authors_perturbed.json", perturbed=True, paraphrased=False
    )
    world_facts = read_qa_file(
        root / "world_facts_perturbed.json", perturbed=True, paraphrased=False
    )
    idk = read_idk_file(root / "idontknow.jsonl")
    return UnlearningData(
        forget=assign_idk_answers(forget, idk, seed),
        retain=assign_idk_answers(retain, idk, seed + 1),
        forget_eval=forget_eval,
        retain_eval=retain_eval,
        real_authors_eval=real_authors,
        world_facts_eval=world_facts,
        idk_answers=idk,
        source=f"tofu:{forget_split}/task={task}+"
        f"{resolve_retain_split(retain_split, forget_split)} ({root})",
    )


def check_retain_split(retain_split: str, forget_split: str | None = None) -> None:
    """ValueError unless ``retain_split`` is a known name (and, for ``retain99`` /
    ``retain95``, the counterpart of ``forget_split``)."""
    if retain_split not in RETAIN_SPLITS:
        raise ValueError(f"retain_split must be one of {RETAIN_SPLITS}, got {retain_split!r}")
    if forget_split is None or retain_split in ("auto", *RETAIN_FILES):
        return
    if COUNTERPARTS.get(forget_split) != retain_split:
        owner = next(f for f, r in COUNTERPARTS.items() if r == retain_split)
        raise ValueError(
            f"retain_split {retain_split!r} is the retain set of {owner} (there is no "
            f"{retain_split}.json); with {forget_split} use 'auto' (= "
            f"{COUNTERPARTS.get(forget_split)}) or a file: {', '.join(RETAIN_FILES)}")


def resolve_retain_split(retain_split: str, forget_split: str) -> str:
    """``auto`` -> the counterpart of ``forget_split``; other names unchanged."""
    return COUNTERPARTS[forget_split] if retain_split == "auto" else retain_split


def retain_items(root: Path, forget_split: str, retain_split: str,
                 forget_keys: set[tuple[str, str]]) -> list[QAItem]:
    """The retain training items of ``retain_split`` for a forget set (``forget_keys``).

    The counterpart of the forget split (``auto``; retain99 / retain95 / retain90 for
    forget01 / 05 / 10) is TOFU's retain set: every TOFU item but the forget set. No file
    holds it for a task of the re-split data, so it is built: the union of retain90.json
    and the three forget files (all tasks; the 4,000 TOFU items, deduplicated on question
    and answer, in that order) minus the forget items. This is the set DualOptim's code
    forms (retain90/50/10.json plus the forget file's other tasks) and, for task 1 (TOFU's
    own forget01/05/10 items), TOFU's retain99/95/90; for forget10 task 1 it is
    retain90.json, in its order. Any other name is that file minus the forget items.
    """
    name = resolve_retain_split(retain_split, forget_split)
    if name != COUNTERPARTS[forget_split]:
        items = read_qa_file(root / f"{name}.json", perturbed=False, paraphrased=False)
    else:
        items, seen = [], set()
        for file in ("retain90", "forget10", "forget05", "forget01"):
            for it in read_qa_file(root / f"{file}.json", perturbed=False, paraphrased=False):
                key = (it.question, it.answer)
                if key not in seen:
                    seen.add(key)
                    items.append(QAItem(it.question, it.answer))
    return [it for it in items if (it.question, it.answer) not in forget_keys]
