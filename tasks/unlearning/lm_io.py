"""Text <-> tensors for the unlearning task: tokenizer, training batches, scoring batches and
greedy answers, built on ``moopt.tasks.common`` (tokenizer, qa encoding, length bucketing).

Example:
    >>> from moopt.tasks.unlearning.embedded import make_embedded
    >>> from moopt.tasks.unlearning.lm_io import make_tokenizer, training_batches
    >>> data = make_embedded(n_people=4, n_forget=1, facts_per_person=2, n_utility=4)
    >>> tok = make_tokenizer(data, kind="word", vocab_size=512)
    >>> batches = training_batches(tok, data.forget, batch_size=2, max_length=64, seed=0,
    ...                            with_idk=True)
    >>> sorted(batches[0]), sorted(batches[0]["idk"])
    (['attention_mask', 'idk', 'input_ids', 'labels'], ['attention_mask', 'input_ids', 'labels'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moopt.tasks.common.batching import length_bucketed_batches
from moopt.tasks.common.generate import greedy_answers  # noqa: F401 (re-exported)
from moopt.tasks.common.prompt_format import PromptFormat, parse_prompt_format
from moopt.tasks.common.qa import encode_batch, encode_pair
from moopt.tasks.unlearning.data import QAItem, UnlearningData


def corpus(data: UnlearningData) -> list[str]:
    """Every text of the data (questions, all answers, refusals) for tokenizer training."""
    texts = ["Question: Answer:"]
    for name in ("forget", "retain", "background", "forget_eval", "retain_eval",
                 "real_authors_eval", "world_facts_eval"):
        for it in getattr(data, name):
            texts += [it.question, it.answer, *it.perturbed_answers]
            texts += [t for t in (it.paraphrased_answer, it.idk_answer) if t]
    return texts + list(data.idk_answers)


def make_tokenizer(data: UnlearningData, *, kind: str, vocab_size: int) -> Any:
    """A tokenizer trained on the data's own text (deterministic)."""
    from moopt.tasks.common.tokenizer import train_tokenizer

    if kind == "bpe":
        vocab_size = max(vocab_size, 300)  # byte alphabet + specials
    return train_tokenizer(corpus(data), vocab_size=vocab_size, kind=kind)


def training_batches(
    tokenizer: Any,
    items: Sequence[QAItem],
    *,
    batch_size: int,
    max_length: int,
    seed: int,
    with_idk: bool = False,
    fmt: str | PromptFormat = "auto",
) -> list[dict[str, Any]]:
    """Length-bucketed, padded batches of ``items`` in prompt format ``fmt``; with
    ``with_idk`` each batch also holds ``batch["idk"]``: the same questions answered with
    the items' refusal answers."""
    if not items:
        raise ValueError("training_batches: no items")
    if with_idk:
        missing = [it.question for it in items if not it.idk_answer]
        if missing:
            raise ValueError(f"item {missing[0]!r} has no idk_answer, needed by the loss")
    fmt = parse_prompt_format(fmt, tokenizer)
    lengths = [len(encode_pair(tokenizer, it.question, it.answer, max_length=max_length,
                               fmt=fmt)) for it in items]
    out = []
    for idx in length_bucketed_batches(lengths, batch_size, seed=seed):
        chosen = [items[i] for i in idx]
        questions = [it.question for it in chosen]
        batch: dict[str, Any] = encode_batch(
            tokenizer, questions, [it.answer for it in chosen], max_length, fmt)
        if with_idk:
            batch["idk"] = encode_batch(tokenizer, questions,
                                        [it.idk_answer or "" for it in chosen], max_length, fmt)
        out.append(batch)
    return out
