"""``moopt tofu-score``: model utility and forget quality from a folder of TOFU eval logs.

The aggregation is TOFU's (``aggregate_eval_stat.py`` of locuslab/tofu), computed from the
four files of ``tofu_logs`` (ours, or the ones TOFU publishes per model):

- probability: mean exp(-avg_gt_loss) on retain and forget; on real_authors and
  world_facts the mean share p_true / (p_true + sum_j p_pert_j), p = exp(-L);
- ROUGE: mean rougeL_recall;
- truth ratio: per item R = exp(mean_j average_perturb_loss_j - avg_paraphrased_loss);
  the set score is mean min(R, 1/R) on forget and mean max(0, 1 - 1/R) elsewhere;
- model utility: harmonic mean of the 9 probability / ROUGE / truth-ratio numbers of
  retain, real_authors and world_facts;
- forget quality: p-value of the two-sample KS test between the forget-set R of the model
  and of the retain model (``--retain-logs``).

Keys of the result follow the run's ``metrics.json`` (``retain/probability``, ...), so a
run's own logs give back its ``model_utility`` and ``forget_quality``.

Example:
    >>> from moopt.tasks.unlearning.tofu_score import COMMAND
    >>> COMMAND.name
    'tofu-score'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from moopt.tasks.unlearning import metrics as M
from moopt.tasks.unlearning.tofu_logs import LOG_FILES, SetLog, TofuLogError, read_log

SCORE_KEYS = ("avg_gt_loss", "avg_paraphrased_loss", "average_perturb_loss", "rougeL_recall")
RATIO_KEYS = ("avg_paraphrased_loss", "average_perturb_loss")
SET_ORDER = ("retain", "real_authors", "world_facts", "forget")


def truth_ratios_of(log: SetLog) -> np.ndarray:
    """Per-item R = exp(mean_j L_pert_j - L_base) of a log (TOFU's forget-quality input)."""
    return M.truth_ratios(log.column("avg_paraphrased_loss"),
                          log.column("average_perturb_loss"))


def retain_truth_ratios(folder: str | Path, n_items: int | None = None,
                        other: str = "this run evaluates") -> list[float]:
    """The forget-set truth ratios of a retain model from its ``eval_log_forget.json``;
    with ``n_items``, a log over another number of items is an error (``other`` says
    whose count that is)."""
    log = read_log(folder, "forget", RATIO_KEYS)
    if n_items is not None and len(log) != n_items:
        raise TofuLogError(
            f"{log.path}: holds {len(log)} forget items but {other} {n_items}; the retain "
            "model's logs must cover the same forget set (TOFU's published forget10 logs "
            "hold only 300 of its 400 items)")
    return [float(r) for r in truth_ratios_of(log)]


def score_logs(folder: str | Path, retain_logs: str | Path | None = None) -> dict[str, Any]:
    """TOFU's aggregate of the logs in ``folder``: ``{set}/{probability,rouge_l,
    truth_ratio,loss}``, ``model_utility``, and with ``retain_logs`` ``forget_quality``
    and ``ks_statistic`` (None without); ``n_items`` per set."""
    out: dict[str, Any] = {}
    logs = {name: read_log(folder, name, SCORE_KEYS) for name in SET_ORDER}
    for name, log in logs.items():
        try:
            out.update(M.set_metrics(name, log.column("avg_gt_loss"),
                                     log.column("avg_paraphrased_loss"),
                                     log.column("average_perturb_loss"),
                                     log.column("rougeL_recall")))
        except ValueError as err:  # e.g. a non-finite loss: name the file
            raise TofuLogError(f"{log.path}: {err}") from None
    out["model_utility"] = M.model_utility(out)
    out["forget_quality"] = out["ks_statistic"] = None
    if retain_logs is not None:
        forget = logs["forget"]
        reference = retain_truth_ratios(retain_logs, len(forget), f"{forget.path} holds")
        from scipy.stats import ks_2samp

        test = ks_2samp(truth_ratios_of(forget), reference)
        out["forget_quality"] = float(test.pvalue)
        out["ks_statistic"] = float(test.statistic)
    out["n_items"] = {name: len(log) for name, log in logs.items()}
    return out


class TofuScoreCommand:
    """The ``moopt tofu-score`` subcommand (registered in the ``moopt.commands`` group)."""

    name = "tofu-score"
    help = "model utility and forget quality from TOFU-format eval logs"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("logs_dir", type=Path, help="folder with the four TOFU log files ("
                            + ", ".join(LOG_FILES.values()) + ")")
        parser.add_argument("--retain-logs", type=Path, metavar="DIR",
                            help="the retain model's log folder (for forget quality)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        result = score_logs(args.logs_dir, args.retain_logs)
        if args.json:
            print(json.dumps(result, sort_keys=True))
            return 0
        width = max(len(k) for k in result)
        for key in ("model_utility", "forget_quality", "ks_statistic"):
            value = result[key]
            print(f"{key:<{width}}  {'-' if value is None else f'{value:.6g}'}")
        for name in SET_ORDER:
            for part in ("probability", "rouge_l", "truth_ratio", "loss"):
                key = f"{name}/{part}"
                print(f"{key:<{width}}  {result[key]:.6g}")
        print("items: " + ", ".join(f"{k} {v}" for k, v in result["n_items"].items()))
        return 0


COMMAND = TofuScoreCommand()


def reference_summary(folder: str | Path) -> dict[str, float]:
    """TOFU's aggregate of a retain model's logs, for the report; empty when the folder
    holds only ``eval_log_forget.json`` (all forget quality needs) or lacks ROUGE."""
    if not all((Path(folder) / name).is_file() for name in LOG_FILES.values()):
        return {}
    try:
        out = score_logs(folder)
    except TofuLogError:
        return {}
    return {k: v for k, v in out.items() if isinstance(v, float)}
