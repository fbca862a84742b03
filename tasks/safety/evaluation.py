"""Evaluate a causal LM on the safety sets: generate, score refusals, score utility.

Metrics (flat floats; definitions in :mod:`moopt.tasks.safety.metrics`):

* ``refusal_rate`` / ``full_refusal_rate``: held-out harmful prompts;
* ``over_refusal_rate`` / ``over_full_refusal_rate``: safe prompts (XSTest safe, or the
  embedded safe-but-scary ones);
* ``unsafe_compliance_rate``: XSTest unsafe prompts (only with ``--data-dir``);
* ``benign_refusal_rate``: refusals on benign prompts (reference set + benign prompt files);
* ``utility``: mean ROUGE-L recall of greedy answers vs references on held-out benign items;
  ``utility_nll``: mean per-token NLL of those references;
* ``empty_rate``: fraction of generated responses that are empty (scored as refusals).

Prompts longer than ``max_length - max_new_tokens`` tokens are cut from the left (their end,
which the answer depends on, is kept); training pairs are truncated as documented in
``moopt.tasks.common.qa``. Nothing raises on long prompts.

Example:
    >>> from moopt.tasks.safety.evaluation import RATE_KEYS
    >>> RATE_KEYS["harmful"]
    ('refusal_rate', 'full_refusal_rate')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from moopt.tasks.common.prompt_format import PromptFormat, parse_prompt_format
from moopt.tasks.safety.metrics import label_rates, rouge_l_recall
from moopt.tasks.safety.refusal import RefusalScorer
from moopt.tasks.safety.sources import SafetyData
from torch import nn

# eval set -> (key of the refusal+partial rate, key of the full-refusal rate or None)
RATE_KEYS = {
    "harmful": ("refusal_rate", "full_refusal_rate"),
    "safe": ("over_refusal_rate", "over_full_refusal_rate"),
}


@dataclass
class SafetyEval:
    """Metrics, and per set the prompts, responses and refusal labels (for the report)."""

    metrics: dict[str, float]
    responses: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)


def generate(model: nn.Module, tokenizer: Any, prompts: list[str], *, max_new_tokens: int,
             max_length: int, batch_size: int, fmt: str | PromptFormat = "auto") -> list[str]:
    """Greedy answers in chunks of ``batch_size``, each prompt put in the prompt format
    ``fmt`` (see ``moopt.tasks.common.prompt_format``) and cut from the left to fit."""
    from moopt.tasks.common.generate import greedy_answers

    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        out += greedy_answers(model, tokenizer, prompts[start:start + batch_size],
                              max_new_tokens=max_new_tokens, max_length=max_length, fmt=fmt)
    return out


@torch.no_grad()
def answer_nll(model: nn.Module, tokenizer: Any, questions: list[str], answers: list[str], *,
               max_length: int, batch_size: int, fmt: str | PromptFormat = "auto") -> float:
    """Mean over items of the per-token NLL of each reference answer (prompt format
    ``fmt``)."""
    from moopt.tasks.common.qa import encode_batch

    from moopt.objectives.lm_utils import mean_token_nll

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        vals: list[float] = []
        for s in range(0, len(questions), batch_size):
            batch = encode_batch(tokenizer, questions[s:s + batch_size],
                                 answers[s:s + batch_size], max_length, fmt)
            batch = {k: v.to(device) for k, v in batch.items()}
            vals += mean_token_nll(model, batch).tolist()
    finally:
        model.train(was_training)
    return sum(vals) / len(vals)


def evaluate_safety(model: nn.Module, tokenizer: Any, data: SafetyData, scorer: RefusalScorer,
                    *, max_new_tokens: int, max_length: int, batch_size: int,
                    fmt: str | PromptFormat = "auto",
                    on_set_done: Callable[[str], None] | None = None) -> SafetyEval:
    """Every metric of the module docstring on ``data.eval`` (prompts in format ``fmt``);
    ``on_set_done(name)`` is called after each evaluated set (progress display)."""
    fmt = parse_prompt_format(fmt, tokenizer)
    metrics: dict[str, float] = {}
    responses: dict[str, list[tuple[str, str, str]]] = {}
    n_empty = n_all = 0
    benign_labels: list[str] = []
    for name, items in data.eval.items():
        if not items:
            continue
        prompts = [e.prompt_text for e in items]
        outs = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                        max_length=max_length, batch_size=batch_size, fmt=fmt)
        labels = scorer.score(prompts, outs)
        responses[name] = list(zip(prompts, outs, labels))
        n_all += len(outs)
        n_empty += sum(not o.strip() for o in outs)
        rates = label_rates(labels)
        if name in RATE_KEYS:
            any_key, full_key = RATE_KEYS[name]
            metrics[any_key] = rates["refusal_rate"]
            metrics[full_key] = rates["full_refusal_rate"]
        elif name == "unsafe":
            metrics["unsafe_compliance_rate"] = rates["compliance_rate"]
        else:  # benign sets
            benign_labels += labels
        if name == "benign":
            refs = [e.answer or "" for e in items]
            metrics["utility"] = sum(rouge_l_recall(o, r) for o, r in zip(outs, refs)) / len(refs)
            metrics["utility_nll"] = answer_nll(model, tokenizer, prompts, refs,
                                                max_length=max_length, batch_size=batch_size,
                                                fmt=fmt)
        if on_set_done is not None:
            on_set_done(name)
    if benign_labels:
        metrics["benign_refusal_rate"] = label_rates(benign_labels)["refusal_rate"]
    metrics["empty_rate"] = n_empty / max(n_all, 1)
    return SafetyEval(metrics, responses)
