"""Tokenise prompt/answer pairs into HF-convention training examples.

Prompt format. The plain template (``PLAIN_TEMPLATE``) renders a question as
``"Question: {question}\\nAnswer:"`` and the answer as ``" " + answer`` followed by EOS, so
BPE sees the answer's first word with its leading space exactly as in running text.
With ``use_chat_template=True`` (or ``None`` and a tokenizer that has a chat template), the
prompt is the tokenizer's chat template applied to one user message with the generation
prompt, and the answer follows as is (the template owns BOS; EOS is still appended).
``encode_pair`` / ``encode_batch`` take a named prompt format instead (``fmt``: ``auto``,
``plain``, ``chat``, TOFU's ``tofu-phi`` / ``tofu-llama2``, or a template with
``{question}``; see ``moopt.tasks.common.prompt_format``).

Labels. ``labels`` equal ``input_ids`` on answer tokens (including the final EOS) and
``-100`` on prompt tokens; ``collate`` adds ``-100`` on padding.

Truncation to ``max_length`` (normally the model's context) never raises unless
``on_overflow="error"``. When prompt + answer are too long, the answer is guaranteed
``min(len(answer), max(1, max_length // 2))`` tokens; the prompt keeps at most the rest,
**cut from the left** (its beginning, BOS included, is dropped: the end of a prompt is what
the answer depends on); the answer then fills the remaining positions, **cut from the
right** (its end, EOS first, is dropped). So a prompt shorter than half the context is never
cut. ``EncodedQA.truncated`` records that something was dropped.

Example:
    >>> from moopt.tasks.common.tokenizer import train_tokenizer
    >>> from moopt.tasks.common.qa import encode_qa
    >>> tok = train_tokenizer(["Question: who? Answer: me"] * 2, vocab_size=300)
    >>> ex = encode_qa(tok, "who?", "me", max_length=64)
    >>> tok.decode([t for t, l in zip(ex.input_ids, ex.labels) if l != -100])
    ' me<eos>'
    >>> ex.prompt_len == ex.labels.count(-100)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moopt.tasks.common.prompt_format import PromptFormat, parse_prompt_format

IGNORE_INDEX = -100
OVERFLOW = ("truncate", "error")


@dataclass(frozen=True)
class PromptTemplate:
    """A plain-text prompt template; ``prompt`` must contain ``{question}``."""

    prompt: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "

    def __post_init__(self) -> None:
        if "{question}" not in self.prompt:
            raise ValueError(f"prompt template {self.prompt!r} has no '{{question}}' field")


PLAIN_TEMPLATE = PromptTemplate()


def _use_chat(tokenizer: Any, use_chat_template: bool | None) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if use_chat_template and not has:
        raise ValueError(
            f"use_chat_template=True but tokenizer {getattr(tokenizer, 'name_or_path', '')!r} "
            "has no chat template"
        )
    return has if use_chat_template is None else bool(use_chat_template)


def format_prompt(
    tokenizer: Any,
    question: str,
    template: PromptTemplate = PLAIN_TEMPLATE,
    use_chat_template: bool | None = None,
) -> str:
    """The prompt text for ``question`` (what ``greedy_generate`` should be given)."""
    if not isinstance(question, str):
        raise TypeError(f"question must be a string, got {type(question).__name__}")
    if _use_chat(tokenizer, use_chat_template):
        messages = [{"role": "user", "content": question}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return template.prompt.format(question=question)


@dataclass(frozen=True)
class EncodedQA:
    """One tokenised example: ``input_ids`` and ``labels`` of equal length."""

    input_ids: list[int]
    labels: list[int]
    prompt_len: int
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_qa(
    tokenizer: Any,
    question: str,
    answer: str,
    *,
    max_length: int,
    template: PromptTemplate = PLAIN_TEMPLATE,
    use_chat_template: bool | None = None,
    on_overflow: str = "truncate",
) -> EncodedQA:
    """Tokenise one pair: ``[BOS] prompt`` (labels -100) then ``answer EOS`` (labels = ids)."""
    if not isinstance(answer, str):
        raise TypeError(f"answer must be a string, got {type(answer).__name__}")
    _check_limits(max_length, on_overflow)
    chat = _use_chat(tokenizer, use_chat_template)
    prompt = _ids(tokenizer, format_prompt(tokenizer, question, template, chat))
    if not chat and tokenizer.bos_token_id is not None:
        prompt = [tokenizer.bos_token_id, *prompt]
    ans = _ids(tokenizer, answer if chat else template.answer_prefix + answer)
    if tokenizer.eos_token_id is not None:
        ans.append(tokenizer.eos_token_id)
    return _fit(prompt, ans, max_length, on_overflow, question)


def _check_limits(max_length: int, on_overflow: str) -> None:
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    if on_overflow not in OVERFLOW:
        raise ValueError(f"on_overflow must be one of {OVERFLOW}, got {on_overflow!r}")


def _fit(prompt: list[int], ans: list[int], max_length: int, on_overflow: str,
         question: str) -> EncodedQA:
    """Cut prompt (from the left) and answer (from the right) to ``max_length`` tokens."""
    total = len(prompt) + len(ans)
    if total > max_length and on_overflow == "error":
        raise ValueError(
            f"question {question[:40]!r}...: prompt ({len(prompt)} tokens) + answer "
            f"({len(ans)} tokens) exceed max_length {max_length}"
        )
    keep_answer_min = min(len(ans), max(1, max_length // 2))
    keep_prompt = min(len(prompt), max_length - keep_answer_min)
    keep_answer = min(len(ans), max_length - keep_prompt)
    prompt = prompt[len(prompt) - keep_prompt :]
    ans = ans[:keep_answer]
    return EncodedQA(
        input_ids=prompt + ans,
        labels=[IGNORE_INDEX] * len(prompt) + ans,
        prompt_len=len(prompt),
        truncated=total > max_length,
    )


def encode_qa_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], *, max_length: int, **kwargs: Any
) -> list[EncodedQA]:
    """``encode_qa`` over ``(question, answer)`` pairs; errors name the pair's index."""
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"pairs[{i}] must be a (question, answer) pair, got {pair!r}")
        try:
            out.append(encode_qa(tokenizer, pair[0], pair[1], max_length=max_length, **kwargs))
        except (TypeError, ValueError) as err:
            raise type(err)(f"pairs[{i}]: {err}") from err
    return out


def encode_pair(
    tokenizer: Any,
    question: str,
    answer: str,
    *,
    max_length: int,
    fmt: str | PromptFormat = "auto",
    on_overflow: str = "truncate",
) -> EncodedQA:
    """Tokenise one pair in the prompt format ``fmt`` (a ``PromptFormat`` or an option value,
    see ``moopt.tasks.common.prompt_format``). ``plain``/``chat`` formats use ``encode_qa``;
    joint formats (``tofu-*``, user templates) tokenise prompt + answer as one text with the
    tokenizer's special tokens, as TOFU does, and score everything after the prompt's own
    tokens, plus EOS. Truncation follows the rule of ``encode_qa``."""
    fmt = parse_prompt_format(fmt, tokenizer)
    if not fmt.joint:
        template = PLAIN_TEMPLATE if fmt.chat else PromptTemplate(fmt.prompt or "",
                                                                  fmt.answer_prefix)
        return encode_qa(tokenizer, question, answer, max_length=max_length, template=template,
                         use_chat_template=fmt.chat, on_overflow=on_overflow)
    _check_limits(max_length, on_overflow)
    prompt_text = fmt.prompt_text(tokenizer, question)
    full = list(tokenizer(prompt_text + fmt.answer_text(answer),
                          add_special_tokens=True)["input_ids"])
    n_prompt = len(tokenizer(prompt_text, add_special_tokens=True)["input_ids"])
    ans = full[n_prompt:]
    if tokenizer.eos_token_id is not None:
        ans.append(tokenizer.eos_token_id)
    return _fit(full[:n_prompt], ans, max_length, on_overflow, question)


def encode_batch(tokenizer: Any, questions: Sequence[str], answers: Sequence[str],
                 max_length: int, fmt: str | PromptFormat = "auto") -> dict[str, Any]:
    """One padded batch of (question, answer) pairs in prompt format ``fmt``, labels only on
    answer tokens."""
    from moopt.tasks.common.batching import collate

    fmt = parse_prompt_format(fmt, tokenizer)
    examples = [encode_pair(tokenizer, q, a, max_length=max_length, fmt=fmt)
                for q, a in zip(questions, answers)]
    return collate(examples, tokenizer.pad_token_id)
