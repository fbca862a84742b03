"""TOFU-format evaluation logs: the four JSON files TOFU writes (and publishes) per model.

TOFU's ``evaluate_util.py`` (locuslab/tofu) writes, for one model, one file per evaluation
set; ``tofu-score`` and ``--retain-logs`` read the same format back:

| set | file |
| --- | --- |
| retain | ``eval_log.json`` |
| forget | ``eval_log_forget.json`` |
| real_authors | ``eval_real_author_wo_options.json`` |
| world_facts | ``eval_real_world_wo_options.json`` |

Each file is one JSON object mapping a metric name to an object from the item index (a
string, ``"0"``, ``"1"``, ...) to that item's value. L is a mean over the scored answer
tokens (the answer and EOS) of the token NLL, ``*_loss`` without ``avg`` the sum:

- ``avg_gt_loss``, ``gt_loss``, ``num_token_gt``: L, summed NLL and token count of the
  true answer;
- ``avg_paraphrased_loss``, ``paraphrased_loss``, ``num_token_paraphrased``: the same for
  the truth-ratio base: the paraphrased answer on forget and retain, the true answer on
  real_authors and world_facts;
- ``average_perturb_loss``, ``perturb_loss``, ``num_token_perturb``: lists, one entry per
  perturbed answer;
- ``truth_ratio``: exp(L_base - mean_j L_pert_j), as TOFU logs it (the inverse of the R
  that the scores use);
- ``rouge1_recall``, ``rougeL_recall``: ROUGE recalls of the greedy answer, and
  ``generated_text``: ``[prompt, greedy answer, true answer]`` (when generating);
- ``normalized_gt_loss`` (real_authors and world_facts only):
  -log(p_true / (p_true + sum_j p_pert_j)).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from moopt.tasks.unlearning.tofu_logs import LOG_FILES, read_log
    >>> LOG_FILES["forget"]
    'eval_log_forget.json'
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "eval_log_forget.json").write_text(
    ...     '{"avg_paraphrased_loss": {"0": 1.0}, "average_perturb_loss": {"0": [2.0, 3.0]}}')
    >>> log = read_log(folder, "forget", ["avg_paraphrased_loss", "average_perturb_loss"])
    >>> log.column("average_perturb_loss")
    [[2.0, 3.0]]
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moopt.errors import MooptError

if TYPE_CHECKING:
    from moopt.tasks.unlearning.evaluation import SetScores, UnlearningEval

LOG_FILES = {
    "retain": "eval_log.json",
    "forget": "eval_log_forget.json",
    "real_authors": "eval_real_author_wo_options.json",
    "world_facts": "eval_real_world_wo_options.json",
}
LIST_KEYS = ("average_perturb_loss", "perturb_loss", "num_token_perturb")
TEXT_KEYS = ("generated_text",)


class TofuLogError(MooptError, ValueError):
    """A TOFU log folder or file is missing or malformed (the message names file and key)."""


def set_log(scores: SetScores) -> dict[str, dict[str, Any]]:
    """The TOFU log object of one evaluated set (keys in the order TOFU writes them)."""
    from moopt.tasks.unlearning.metrics import NORMALIZED_PROBABILITY_SETS

    n = len(scores.items)
    ix = [str(i) for i in range(n)]

    def col(values: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(ix, values))

    true_loss, base_loss, pert_loss = scores.true_loss, scores.base_loss, scores.pert_loss
    log: dict[str, dict[str, Any]] = {
        "avg_gt_loss": col([float(v) for v in true_loss]),
        "gt_loss": col([float(v) for v in scores.true_nll]),
        "num_token_gt": col([int(v) for v in scores.true_tokens]),
    }
    if scores.rouge_l is not None and scores.rouge1 is not None:
        log["generated_text"] = col([[p, g, it.answer] for p, g, it in
                                     zip(scores.prompts, scores.generations, scores.items)])
        log["rouge1_recall"] = col([float(v) for v in scores.rouge1])
        log["rougeL_recall"] = col([float(v) for v in scores.rouge_l])
    log["average_perturb_loss"] = col([[float(v) for v in row] for row in pert_loss])
    log["avg_paraphrased_loss"] = col([float(v) for v in base_loss])
    log["truth_ratio"] = col([_exp(float(b) - float(row.mean()))
                              for b, row in zip(base_loss, pert_loss)])
    log["paraphrased_loss"] = col([float(v) for v in scores.base_nll])
    log["perturb_loss"] = col([[float(v) for v in row] for row in scores.pert_nll])
    log["num_token_paraphrased"] = col([int(v) for v in scores.base_tokens])
    log["num_token_perturb"] = col([[int(v) for v in row] for row in scores.pert_tokens])
    if scores.name in NORMALIZED_PROBABILITY_SETS:
        from moopt.tasks.unlearning.metrics import normalized_probabilities

        share = normalized_probabilities(true_loss, pert_loss)
        log["normalized_gt_loss"] = col([-math.log(v) if v > 0 else math.inf for v in share])
    return log


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def write_logs(result: UnlearningEval, folder: Path) -> list[Path]:
    """Write one TOFU log file per evaluated set of ``result`` into ``folder`` (created);
    returns the files written. Each file is replaced atomically."""
    from moopt.runner.atomic import write_text_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, scores in result.sets.items():
        path = folder / LOG_FILES[name]
        write_text_atomic(path, json.dumps(set_log(scores), indent=4) + "\n")
        written.append(path)
    return written


@dataclass
class SetLog:
    """One TOFU log file read back: ``data`` (metric -> index -> value) and the item
    indices, sorted numerically, that every requested key holds."""

    path: Path
    data: dict[str, dict[str, Any]]
    indices: list[str]

    def column(self, key: str) -> list[Any]:
        """The values of ``key`` in item order."""
        values = self.data.get(key)
        if values is None:
            raise TofuLogError(f"{self.path}: missing key {key!r} (keys: {sorted(self.data)})")
        return [values[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)


def read_log(folder: str | Path, name: str, keys: Sequence[str]) -> SetLog:
    """Read and check the log file of set ``name`` in ``folder``: it must be a JSON object
    holding every key of ``keys``, each an object from item indices ("0", "1", ...) to
    numbers (lists of numbers for the perturbed-answer keys), all over the same items."""
    if name not in LOG_FILES:
        raise ValueError(f"unknown TOFU log set {name!r}; choose from {list(LOG_FILES)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise TofuLogError(f"TOFU log folder {str(folder)!r} does not exist")
    path = folder / LOG_FILES[name]
    if not path.is_file():
        raise TofuLogError(f"{path}: file missing (a TOFU log folder holds "
                           f"{', '.join(LOG_FILES.values())})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TofuLogError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise TofuLogError(f"{path}: expected a JSON object of metrics, got "
                           f"{type(data).__name__}")
    indices: list[str] | None = None
    for key in keys:
        values = data.get(key)
        if values is None:
            raise TofuLogError(f"{path}: missing key {key!r} (keys: {sorted(data)})")
        if not isinstance(values, dict) or not values:
            raise TofuLogError(f"{path}: key {key!r} must map item indices to values, got "
                               f"{_short(values)}")
        for index, value in values.items():
            _check_value(path, key, index, value)
        found = sorted(values, key=int)
        if indices is None:
            indices = found
        elif found != indices:
            raise TofuLogError(f"{path}: key {key!r} holds {len(found)} items "
                               f"({_span(found)}) but {keys[0]!r} holds {len(indices)} "
                               f"({_span(indices)})")
    return SetLog(path, data, indices or [])


def _check_value(path: Path, key: str, index: str, value: Any) -> None:
    if not index.isdigit():
        raise TofuLogError(f"{path}: key {key!r} has item index {index!r}; indices are "
                           "non-negative integers written as strings")
    where = f"{path}: {key}[{index!r}]"
    if key in LIST_KEYS:
        if not isinstance(value, list) or not value or not all(_is_number(v) for v in value):
            raise TofuLogError(f"{where} must be a non-empty list of numbers, got "
                               f"{_short(value)}")
    elif key in TEXT_KEYS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TofuLogError(f"{where} must be a list of strings, got {_short(value)}")
    elif not _is_number(value):
        raise TofuLogError(f"{where} must be a number, got {_short(value)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _span(indices: list[str]) -> str:
    return f"{indices[0]}..{indices[-1]}" if indices else "none"
