"""Model-facing TOFU evaluation: answer losses, greedy answers, and the metrics of ``metrics.py``.

All the (question, answer) pairs a set needs (true, paraphrased and perturbed answers) are
scored together in length-sorted batches, so padding stays small and each batch is one
forward pass. Tokenisation and generation come from two callables so the evaluation works
with any model: ``batch_fn(questions, answers) -> batch`` (HF-style dict: ``input_ids``,
``attention_mask``, ``labels`` with -100 off the answer) and ``generate_fn(questions) ->
answers`` (greedy). By default both come from ``moopt.tasks.common`` (``qa.encode_batch``,
``generate.greedy_answers``) bound to ``tokenizer`` and a prompt format. The per-item
numbers of every set (``SetScores``) are kept: they are what TOFU logs (``tofu_logs``).

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
from moopt.tasks.common.prompt_format import PromptFormat, parse_prompt_format
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


@dataclass
class SetScores:
    """Per-item results of one evaluation set: what TOFU logs for each item.

    ``*_nll`` are summed answer-token NLLs and ``*_tokens`` their scored-token counts, for
    the true answer (``true``), the truth-ratio base (``base``: the paraphrase, or the true
    answer on sets without one) and every perturbed answer (``pert``: one array per item).
    ``prompts`` / ``generations``: the generation prompt and the greedy answer per item;
    ``rouge1`` / ``rouge_l``: their ROUGE recalls against the true answer (None without
    generation).
    """

    name: str
    items: list[QAItem]
    true_nll: np.ndarray
    true_tokens: np.ndarray
    base_nll: np.ndarray
    base_tokens: np.ndarray
    pert_nll: list[np.ndarray]
    pert_tokens: list[np.ndarray]
    prompts: list[str] = field(default_factory=list)
    generations: list[str] = field(default_factory=list)
    rouge1: np.ndarray | None = None
    rouge_l: np.ndarray | None = None

    @property
    def true_loss(self) -> np.ndarray:
        """Per-item mean answer-token NLL of the true answer (TOFU's ``avg_gt_loss``)."""
        return self.true_nll / self.true_tokens

    @property
    def base_loss(self) -> np.ndarray:
        """Per-item mean NLL of the base answer (TOFU's ``avg_paraphrased_loss``)."""
        return self.base_nll / self.base_tokens

    @property
    def pert_loss(self) -> list[np.ndarray]:
        """Per-item mean NLLs of the perturbed answers (TOFU's ``average_perturb_loss``)."""
        return [s / n for s, n in zip(self.pert_nll, self.pert_tokens)]

    @property
    def truth_ratios(self) -> np.ndarray:
        """Per-item R = exp(mean_j L_pert_j - L_base)."""
        return M.truth_ratios(self.base_loss, self.pert_loss)

    def metrics(self) -> dict[str, float]:
        """The set's ``{name}/...`` metrics (``metrics.set_metrics``)."""
        return M.set_metrics(self.name, self.true_loss, self.base_loss, self.pert_loss,
                             self.rouge_l)


@dataclass
class UnlearningEval:
    """Result of ``evaluate_unlearning``.

    ``metrics``: flat dict of floats, keys ``{set}/{probability,rouge_l,truth_ratio,loss}``
    for every evaluated set, ``model_utility`` (when the three utility sets were evaluated)
    and ``forget_quality`` (when retain-model truth ratios were given).
    ``forget_truth_ratios``: per-item R on the forget set, to keep from the retain-only
    model and pass back as ``retain_model_truth_ratios``. ``answers``: greedy answers per set.
    ``sets``: the per-item ``SetScores`` of every evaluated set (what ``tofu_logs`` writes).
    """

    metrics: dict[str, float]
    forget_truth_ratios: list[float] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)
    sets: dict[str, SetScores] = field(default_factory=dict)


def answer_nll_sums(
    model: nn.Module,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_fn: BatchFn,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Summed answer-token NLL and scored-token count per (question, answer) pair, in
    length-sorted batches. Raises when a pair has no scored token."""
    if len(questions) != len(answers):
        raise ValueError(f"got {len(questions)} questions for {len(answers)} answers")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(questions)), key=lambda i: len(questions[i]) + len(answers[i]))
    sums = np.empty(len(questions), dtype=np.float64)
    counts = np.empty(len(questions), dtype=np.int64)
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
        sums[idx] = nll.double().cpu().numpy()
        counts[idx] = count.cpu().numpy()
    return sums, counts


def mean_answer_losses(
    model: nn.Module,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_fn: BatchFn,
    batch_size: int = 32,
) -> np.ndarray:
    """Mean answer-token NLL per (question, answer) pair, batched by similar length."""
    sums, counts = answer_nll_sums(model, questions, answers, batch_fn, batch_size)
    return sums / counts


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _score_answers(
    name: str, model: nn.Module, items: Sequence[QAItem], batch_fn: BatchFn, batch_size: int
) -> SetScores:
    """NLLs of the true, base and perturbed answers of every item, in one batched pass over
    all distinct (question, answer) pairs."""
    pairs: dict[tuple[str, str], int] = {}

    def slot(q: str, a: str) -> int:
        return pairs.setdefault((q, a), len(pairs))

    true_ix = [slot(it.question, it.answer) for it in items]
    base_ix = [slot(it.question, it.truth_ratio_base) for it in items]
    pert_ix = [[slot(it.question, p) for p in it.perturbed_answers] for it in items]
    keys = list(pairs)
    sums, counts = answer_nll_sums(
        model, [q for q, _ in keys], [a for _, a in keys], batch_fn, batch_size
    )
    return SetScores(name, list(items), sums[true_ix], counts[true_ix], sums[base_ix],
                     counts[base_ix], [sums[ix] for ix in pert_ix],
                     [counts[ix] for ix in pert_ix])


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
    prompt_fn: Callable[[str], str] | None = None,
) -> SetScores:
    """Per-item scores of one set. Generation and ROUGE are skipped when ``generate_fn`` is
    None; ``prompt_fn(question)`` gives the prompt text recorded with each generation."""
    scores = _score_answers(name, model, items, batch_fn, batch_size)
    if generate_fn is not None:
        questions = [it.question for it in items]
        scores.generations = _generate(generate_fn, questions, batch_size)
        scores.prompts = [prompt_fn(q) if prompt_fn else q for q in questions]
        references = [it.answer for it in items]
        scores.rouge1, scores.rouge_l = M.rouge_recalls(scores.generations, references)
    return scores


def default_fns(
    model: nn.Module,
    tokenizer: Any,
    *,
    max_new_tokens: int = 32,
    max_length: int | None = None,
    prompt_format: str | PromptFormat = "auto",
) -> tuple[BatchFn, GenerateFn]:
    """``batch_fn``/``generate_fn`` from the project's LM helpers: pairs encoded by
    ``qa.encode_batch`` in ``prompt_format`` (answer + EOS scored, as in TOFU) up to
    ``max_length`` tokens (default: the model's context, else 1024), greedy answers from the
    same prompts (``generate.greedy_answers``)."""
    from moopt.tasks.common.generate import greedy_answers
    from moopt.tasks.common.models import context_length
    from moopt.tasks.common.qa import encode_batch

    fmt = parse_prompt_format(prompt_format, tokenizer)
    limit = max_length or context_length(model) or 1024

    def batch_fn(questions: Sequence[str], answers: Sequence[str]) -> Mapping[str, Tensor]:
        return encode_batch(tokenizer, questions, answers, limit, fmt)

    def generate_fn(questions: Sequence[str]) -> Sequence[str]:
        return greedy_answers(model, tokenizer, questions, max_new_tokens=max_new_tokens,
                              max_length=limit, fmt=fmt)

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
    max_length: int | None = None,
    rouge: bool = True,
    prompt_format: str | PromptFormat = "auto",
    batch_fn: BatchFn | None = None,
    generate_fn: GenerateFn | None = None,
    on_set_done: Callable[[str], None] | None = None,
) -> UnlearningEval:
    """Evaluate ``model`` on the evaluation sets of ``data`` (TOFU metrics).

    ``sets``: which of forget, retain, real_authors, world_facts to evaluate (empty sets are
    skipped). ``retain_model_truth_ratios``: the ``forget_truth_ratios`` of a model trained
    on the retain set only; with them the result has ``forget_quality``. ``rouge=False``
    skips generation (ROUGE-L keys and model utility are then absent). Without ``batch_fn``
    / ``generate_fn`` the project's LM helpers are used (``default_fns``) with
    ``prompt_format`` (see ``moopt.tasks.common.prompt_format``), which also renders the
    prompts recorded with the generations. The model is put in eval mode and restored
    afterwards; no gradients are kept. ``on_set_done(name)`` is called after each
    evaluated set (progress display).
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
    fmt = parse_prompt_format(prompt_format, tokenizer)
    if batch_fn is None or (rouge and generate_fn is None):
        default_batch, default_generate = default_fns(
            model, tokenizer, max_new_tokens=max_new_tokens, max_length=max_length,
            prompt_format=fmt)
        batch_fn = batch_fn or default_batch
        generate_fn = generate_fn or default_generate
    if not rouge:
        generate_fn = None
    was_training = model.training
    model.eval()
    scores: dict[str, SetScores] = {}
    try:
        with torch.no_grad():
            for name in sets:
                items = getattr(data, EVAL_SETS[name])
                if items:
                    scores[name] = evaluate_set(
                        name, model, items, batch_fn, generate_fn, batch_size,
                        prompt_fn=lambda q: fmt.prompt_text(tokenizer, q))
                    if on_set_done is not None:
                        on_set_done(name)
    finally:
        model.train(was_training)
    metrics: dict[str, float] = {}
    for got in scores.values():
        metrics.update(got.metrics())
    if all(f"{s}/{p}" in metrics for s in M.UTILITY_SETS for p in M.UTILITY_PARTS):
        metrics["model_utility"] = M.model_utility(metrics)
    forget_ratios = scores["forget"].truth_ratios if "forget" in scores else np.empty(0)
    if retain_model_truth_ratios is not None and forget_ratios.size:
        metrics["forget_quality"] = M.forget_quality(forget_ratios, retain_model_truth_ratios)
    answers = {name: got.generations for name, got in scores.items()}
    return UnlearningEval(metrics, [float(r) for r in forget_ratios], answers, scores)
