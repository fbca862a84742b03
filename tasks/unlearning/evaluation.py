"""Model-facing TOFU evaluation: answer losses, greedy answers, and the metrics of ``metrics.py``.

All the (question, answer) pairs a set needs (true, paraphrased and perturbed answers) are
scored together in length-sorted batches, so padding stays small and each batch is one
forward pass. Tokenisation and generation come from two callables so the evaluation works
with any model: ``batch_fn(questions, answers) -> batch`` (HF-style dict: ``input_ids``,
``attention_mask``, ``labels`` with -100 off the answer) and ``generate_fn(questions) ->
answers`` (greedy). By default both come from ``moopt.tasks.common.lm`` bound to ``tokenizer``.

Example (a fake model that gives every answer token probability 1/4):
    >>> import torch
    >>> from moopt.tasks.unlearning.embedded import make_embedded
    >>> from moopt.tasks.unlearning.evaluation import evaluate_unlearning
    >>> class Uniform(torch.nn.Module):
    ...     def forward(self, input_ids, attention_mask=None):
    ...         return torch.zeros(*input_ids.shape, 4)
    >>> def batch_fn(questions, answers):   # one token per word, all token ids 1
    ...     n = max(len(q.split()) + len(a.split()) for q, a in zip(questions, answers))
    ...     ids = torch.ones(len(questions), n, dtype=torch.long)
    ...     labels = torch.full_like(ids, -100)
    ...     for i, (q, a) in enumerate(zip(questions, answers)):
    ...         labels[i, len(q.split()):len(q.split()) + len(a.split())] = 1
    ...     return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    >>> data = make_embedded(n_people=4, n_forget=1, facts_per_person=2, n_utility=4)
    >>> out = evaluate_unlearning(Uniform(), None, data, batch_fn=batch_fn,
    ...                           generate_fn=lambda qs: ["no idea"] * len(qs))
    >>> round(out.metrics["retain/probability"], 4)   # exp(-log 4)
    0.25
    >>> out.metrics["retain/truth_ratio"]             # all answers equally likely: R = 1
    0.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from moopt.tasks.unlearning import metrics as M
from moopt.tasks.unlearning.data import QAItem, UnlearningData
from torch import Tensor, nn

from moopt.objectives.lm_utils import sequence_nll

BatchFn = Callable[[Sequence[str], Sequence[str]], Mapping[str, Tensor]]
GenerateFn = Callable[[Sequence[str]], Sequence[str]]

# Evaluated set name -> attribute of UnlearningData.
EVAL_SETS = {
    "forget": "forget_eval",
    "retain": "retain_eval",
    "real_authors": "real_authors_eval",
    "world_facts": "world_facts_eval",
}
# Sets whose probability is the true answer's share among its perturbations (TOFU).
NORMALIZED_PROBABILITY_SETS = ("real_authors", "world_facts")


@dataclass
class UnlearningEval:
    """Result of ``evaluate_unlearning``.

    ``metrics``: flat dict of floats, keys ``{set}/{probability,rouge_l,truth_ratio,loss}``
    for every evaluated set, ``model_utility`` (when the three utility sets were evaluated)
    and ``forget_quality`` (when retain-model truth ratios were given).
    ``forget_truth_ratios``: per-item R on the forget set, to keep from the retain-only
    model and pass back as ``retain_model_truth_ratios``. ``answers``: greedy answers per set.
    """

    metrics: dict[str, float]
    forget_truth_ratios: list[float] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)


def mean_answer_losses(
    model: nn.Module,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_fn: BatchFn,
    batch_size: int = 32,
) -> np.ndarray:
    """Mean answer-token NLL per (question, answer) pair, batched by similar length."""
    if len(questions) != len(answers):
        raise ValueError(f"got {len(questions)} questions for {len(answers)} answers")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(questions)), key=lambda i: len(questions[i]) + len(answers[i]))
    out = np.empty(len(questions), dtype=np.float64)
    device = _device_of(model)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = batch_fn([questions[i] for i in idx], [answers[i] for i in idx])
        batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        with torch.no_grad():
            nll, count = sequence_nll(model, batch)
        if bool((count == 0).any()):
            bad = idx[int((count == 0).nonzero()[0, 0])]
            raise ValueError(
                f"answer {answers[bad]!r} to {questions[bad]!r} has no answer token after "
                "batching (truncated or empty)"
            )
        out[idx] = (nll.double() / count.double()).cpu().numpy()
    return out


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _set_losses(
    model: nn.Module, items: Sequence[QAItem], batch_fn: BatchFn, batch_size: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Losses of the true answers, of the truth-ratio base answers and of the perturbed
    answers of every item, in one batched pass over all distinct pairs."""
    pairs: dict[tuple[str, str], int] = {}

    def slot(q: str, a: str) -> int:
        return pairs.setdefault((q, a), len(pairs))

    true_ix = [slot(it.question, it.answer) for it in items]
    base_ix = [slot(it.question, it.truth_ratio_base) for it in items]
    pert_ix = [[slot(it.question, p) for p in it.perturbed_answers] for it in items]
    keys = list(pairs)
    losses = mean_answer_losses(
        model, [q for q, _ in keys], [a for _, a in keys], batch_fn, batch_size
    )
    return losses[true_ix], losses[base_ix], [losses[ix] for ix in pert_ix]


def _generate(generate_fn: GenerateFn, questions: list[str], batch_size: int) -> list[str]:
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        got = list(generate_fn(chunk))
        if len(got) != len(chunk):
            raise ValueError(f"generate_fn returned {len(got)} answers for {len(chunk)} questions")
        answers.extend(got)
    return answers


def evaluate_set(
    name: str,
    model: nn.Module,
    items: Sequence[QAItem],
    batch_fn: BatchFn,
    generate_fn: GenerateFn | None,
    batch_size: int = 32,
) -> tuple[dict[str, float], np.ndarray, list[str]]:
    """Metrics of one set (``{name}/...`` keys), its per-item truth ratios and greedy answers.
    ROUGE-L is skipped when ``generate_fn`` is None."""
    true_l, base_l, pert_l = _set_losses(model, items, batch_fn, batch_size)
    if name in NORMALIZED_PROBABILITY_SETS:
        prob = M.normalized_probabilities(true_l, pert_l)
    else:
        prob = M.answer_probabilities(true_l)
    ratios = M.truth_ratios(base_l, pert_l)
    out = {
        f"{name}/loss": float(true_l.mean()),
        f"{name}/probability": float(prob.mean()),
        f"{name}/truth_ratio": M.truth_ratio_score(ratios, forget=name == "forget"),
    }
    answers: list[str] = []
    if generate_fn is not None:
        answers = _generate(generate_fn, [it.question for it in items], batch_size)
        recalls = M.rouge_l_recalls(answers, [it.answer for it in items])
        out[f"{name}/rouge_l"] = float(recalls.mean())
    return out, ratios, answers


def default_fns(
    model: nn.Module,
    tokenizer: Any,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    **qa_options: Any,
) -> tuple[BatchFn, GenerateFn]:
    """``batch_fn``/``generate_fn`` from the project's LM helpers (``moopt.tasks.common.lm``):
    prompts rendered by ``format_prompt``, pairs encoded by ``encode_qa`` (answer + EOS
    scored, as in TOFU) up to the model's context, greedy decoding. ``qa_options``
    (``template``, ``use_chat_template``) go to the prompt formatting."""
    from moopt.tasks.common import lm

    max_length = lm.context_length(model) or 1024

    def batch_fn(questions: Sequence[str], answers: Sequence[str]) -> Mapping[str, Tensor]:
        pairs = list(zip(questions, answers))
        examples = lm.encode_qa_pairs(tokenizer, pairs, max_length=max_length, **qa_options)
        return lm.collate(examples, tokenizer.pad_token_id)

    def generate_fn(questions: Sequence[str]) -> Sequence[str]:
        prompts = [lm.format_prompt(tokenizer, q, **qa_options) for q in questions]
        return lm.greedy_generate(
            model, tokenizer, prompts, max_new_tokens, batch_size=batch_size
        )

    return batch_fn, generate_fn


def evaluate_unlearning(
    model: nn.Module,
    tokenizer: Any,
    data: UnlearningData,
    retain_model_truth_ratios: Sequence[float] | None = None,
    *,
    sets: Sequence[str] = tuple(EVAL_SETS),
    batch_size: int = 32,
    max_new_tokens: int = 32,
    rouge: bool = True,
    batch_fn: BatchFn | None = None,
    generate_fn: GenerateFn | None = None,
    on_set_done: Callable[[str], None] | None = None,
    **qa_options: Any,
) -> UnlearningEval:
    """Evaluate ``model`` on the evaluation sets of ``data`` (TOFU metrics; definitions in
    docs/tasks/unlearning_data.md).

    ``sets``: which of forget, retain, real_authors, world_facts to evaluate (empty sets are
    skipped). ``retain_model_truth_ratios``: the ``forget_truth_ratios`` of a model trained
    on the retain set only; with them the result has ``forget_quality``. ``rouge=False``
    skips generation (ROUGE-L keys and model utility are then absent). Without ``batch_fn``
    / ``generate_fn`` the project's LM helpers are used (``default_fns``; ``qa_options``
    such as ``template`` or ``use_chat_template`` go to them). The model is put in eval
    mode and restored afterwards; no gradients are kept. ``on_set_done(name)`` is called
    after each evaluated set (progress display).
    """
    if not isinstance(data, UnlearningData):
        raise TypeError(f"data must be an UnlearningData, got {type(data).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(sets, str):
        sets = [sets]
    unknown = [s for s in sets if s not in EVAL_SETS]
    if unknown:
        raise ValueError(f"unknown evaluation set(s) {unknown}; choose from {list(EVAL_SETS)}")
    if batch_fn is None or (rouge and generate_fn is None):
        default_batch, default_generate = default_fns(
            model, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size, **qa_options
        )
        batch_fn = batch_fn or default_batch
        generate_fn = generate_fn or default_generate
    if not rouge:
        generate_fn = None
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    answers: dict[str, list[str]] = {}
    forget_ratios = np.empty(0)
    try:
        with torch.no_grad():
            for name in sets:
                items = getattr(data, EVAL_SETS[name])
                if not items:
                    continue
                got, ratios, answers[name] = evaluate_set(
                    name, model, items, batch_fn, generate_fn, batch_size
                )
                metrics.update(got)
                if name == "forget":
                    forget_ratios = ratios
                if on_set_done is not None:
                    on_set_done(name)
    finally:
        model.train(was_training)
    if all(f"{s}/{p}" in metrics for s in M.UTILITY_SETS for p in M.UTILITY_PARTS):
        metrics["model_utility"] = M.model_utility(metrics)
    if retain_model_truth_ratios is not None and forget_ratios.size:
        metrics["forget_quality"] = M.forget_quality(forget_ratios, retain_model_truth_ratios)
    return UnlearningEval(metrics, [float(r) for r in forget_ratios], answers)
