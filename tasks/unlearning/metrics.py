"""TOFU metrics (Maini et al. 2024) as pure functions on numbers.

Inputs are per-item *mean answer-token NLLs* L (the per-token-normalised loss). Definitions,
matching TOFU's released evaluation code:

- probability on forget/retain sets: mean over items of exp(-L_answer);
- probability on real-authors/world-facts sets: mean of p_true / (p_true + sum_j p_pert_j)
  with p = exp(-L) (true answer among its perturbations);
- truth ratio per item: R = exp(mean_j L_pert_j - L_base), where the base is the paraphrased
  answer, or the true answer for sets without a paraphrase (real-authors, world-facts);
- truth-ratio score of a set: mean max(0, 1 - 1/R) for utility sets; TOFU reports
  mean min(R, 1/R) for the forget set;
- ROUGE-L recall of the greedy answer against the reference answer (rouge-score, stemmed);
- forget quality: p-value of the two-sample KS test between the forget-set R values of the
  unlearned model and of a model trained on the retain set only;
- model utility: harmonic mean of {probability, ROUGE-L, truth-ratio score} on the retain,
  real-authors and world-facts sets (9 numbers).

The model-facing evaluation lives in ``evaluation.py`` (``evaluate_unlearning``); it is
re-exported here for convenience.

Example:
    >>> from moopt.tasks.unlearning.metrics import truth_ratios, harmonic_mean
    >>> truth_ratios([1.0], [[2.0, 3.0]]).round(4).tolist()   # exp(2.5 - 1)
    [4.4817]
    >>> harmonic_mean([1.0, 0.5])
    0.6666666666666666
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

UTILITY_SETS = ("retain", "real_authors", "world_facts")
UTILITY_PARTS = ("probability", "rouge_l", "truth_ratio")
# Sets whose probability is the true answer's share among its perturbations (TOFU).
NORMALIZED_PROBABILITY_SETS = ("real_authors", "world_facts")


def _losses(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-d sequence of losses, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} holds a non-finite loss: {arr[~np.isfinite(arr)][:3]}")
    return arr


def _rows(perturbed: Sequence[Sequence[float]] | np.ndarray, n: int) -> list[np.ndarray]:
    """Perturbed losses as one array per item (items may have different counts)."""
    if len(perturbed) != n:
        raise ValueError(f"got perturbed losses for {len(perturbed)} items, expected {n}")
    rows = [_losses(row, f"perturbed losses of item {i}") for i, row in enumerate(perturbed)]
    empty = [i for i, r in enumerate(rows) if r.size == 0]
    if empty:
        raise ValueError(f"item {empty[0]} has no perturbed losses")
    return rows


def answer_probabilities(losses: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-item probability exp(-L) (forget/retain sets)."""
    return np.exp(-_losses(losses, "losses"))


def normalized_probabilities(
    true_losses: Sequence[float] | np.ndarray,
    perturbed_losses: Sequence[Sequence[float]] | np.ndarray,
) -> np.ndarray:
    """Per-item p_true / (p_true + sum_j p_pert_j), p = exp(-L), computed in log space."""
    from scipy.special import logsumexp  # here, not at import (startup time)

    true = _losses(true_losses, "true_losses")
    rows = _rows(perturbed_losses, true.size)
    return np.array(
        [np.exp(-t - logsumexp(np.concatenate(([-t], -r)))) for t, r in zip(true, rows)]
    )


def truth_ratios(
    base_losses: Sequence[float] | np.ndarray,
    perturbed_losses: Sequence[Sequence[float]] | np.ndarray,
) -> np.ndarray:
    """Per-item R = exp(mean_j L_pert_j - L_base) (may be inf/0 for extreme losses)."""
    base = _losses(base_losses, "base_losses")
    rows = _rows(perturbed_losses, base.size)
    with np.errstate(over="ignore"):
        return np.exp(np.array([r.mean() for r in rows]) - base)


def truth_ratio_score(ratios: Sequence[float] | np.ndarray, *, forget: bool = False) -> float:
    """Set score of truth ratios: mean max(0, 1 - 1/R) (utility sets, higher = prefers true
    answers), or with ``forget=True`` TOFU's forget-set score mean min(R, 1/R)."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.ndim != 1 or r.size == 0 or np.any(np.isnan(r)) or np.any(r < 0):
        raise ValueError(f"truth ratios must be a non-empty 1-d array of values >= 0, got {r}")
    with np.errstate(divide="ignore"):
        inv = 1.0 / r
    if forget:
        return float(np.mean(np.minimum(r, inv)))
    return float(np.mean(np.maximum(0.0, 1.0 - inv)))


def forget_quality(
    unlearned_ratios: Sequence[float] | np.ndarray,
    retain_model_ratios: Sequence[float] | np.ndarray,
) -> float:
    """p-value of the two-sample KS test between forget-set truth ratios of the unlearned
    model and of the retain-only model (1 = indistinguishable)."""
    a = np.asarray(unlearned_ratios, dtype=np.float64)
    b = np.asarray(retain_model_ratios, dtype=np.float64)
    for what, arr in (("unlearned_ratios", a), ("retain_model_ratios", b)):
        if arr.ndim != 1 or arr.size == 0 or np.any(np.isnan(arr)):
            raise ValueError(f"{what} must be a non-empty 1-d array without NaN, got {arr}")
    from scipy.stats import ks_2samp  # here, not at import: scipy.stats takes ~0.8 s to load

    return float(ks_2samp(a, b).pvalue)


def harmonic_mean(values: Sequence[float] | np.ndarray) -> float:
    """``scipy.stats.hmean`` of ``values`` (0 when any value is 0), after checking them: a
    negative value or NaN raises naming the values instead of a scipy warning or ``nan``."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0 or np.any(np.isnan(v)) or np.any(v < 0):
        raise ValueError(f"harmonic_mean needs a non-empty 1-d array of values >= 0, got {v}")
    from scipy.stats import hmean  # here, not at import: scipy.stats takes ~0.8 s to load

    return float(hmean(v))


def model_utility(metrics: Mapping[str, float]) -> float:
    """Harmonic mean of the 9 numbers ``{set}/{part}`` for set in retain, real_authors,
    world_facts and part in probability, rouge_l, truth_ratio (keys of ``evaluate_unlearning``)."""
    keys = [f"{s}/{p}" for s in UTILITY_SETS for p in UTILITY_PARTS]
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise KeyError(f"model_utility: missing metric(s) {missing}; have {sorted(metrics)}")
    return harmonic_mean([metrics[k] for k in keys])


def set_metrics(
    name: str,
    true_losses: Sequence[float] | np.ndarray,
    base_losses: Sequence[float] | np.ndarray,
    perturbed_losses: Sequence[Sequence[float]] | np.ndarray,
    rouge_l: Sequence[float] | np.ndarray | None = None,
) -> dict[str, float]:
    """The ``{name}/...`` metrics of one evaluation set from its per-item mean losses, as
    TOFU's aggregation computes them: ``loss`` (mean L of the true answer), ``probability``
    (normalised among the perturbations on real_authors / world_facts), ``truth_ratio``
    (the forget score on ``forget``, the utility score elsewhere) and, with per-item ROUGE-L
    recalls, ``rouge_l``."""
    true = _losses(true_losses, f"{name}: true-answer losses")
    if name in NORMALIZED_PROBABILITY_SETS:
        prob = normalized_probabilities(true, perturbed_losses)
    else:
        prob = answer_probabilities(true)
    ratios = truth_ratios(base_losses, perturbed_losses)
    out = {
        f"{name}/loss": float(true.mean()),
        f"{name}/probability": float(prob.mean()),
        f"{name}/truth_ratio": truth_ratio_score(ratios, forget=name == "forget"),
    }
    if rouge_l is not None:
        out[f"{name}/rouge_l"] = float(np.mean(np.asarray(rouge_l, dtype=np.float64)))
    return out


def _rouge_scorer() -> Any:
    try:
        from rouge_score import rouge_scorer
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("ROUGE-L needs the rouge-score package: pip install moopt[llm]") from e
    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def rouge_recalls(predictions: Sequence[str],
                  references: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-item ROUGE-1 and ROUGE-L recall of each prediction against its reference (stemmed
    tokens, rouge-score, as TOFU): unigram overlap and LCS length over the number of
    reference tokens."""
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    scorer = _rouge_scorer()
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
    return (np.array([s["rouge1"].recall for s in scores], dtype=np.float64),
            np.array([s["rougeL"].recall for s in scores], dtype=np.float64))


def rouge_l_recalls(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-item ROUGE-L recall of each prediction against its reference (stemmed tokens):
    LCS length / number of reference tokens."""
    return rouge_recalls(predictions, references)[1]


def __getattr__(name: str) -> Any:
    # Lazy re-export: evaluation.py imports this module, so a top-level import would cycle.
    if name in ("evaluate_unlearning", "UnlearningEval"):
        from moopt.tasks.unlearning import evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
