"""Prompt formats: how a question becomes model input and which text is scored as the answer.

One ``PromptFormat`` is used for everything a task does with a model (training batches,
answer losses, greedy generation), so the three always agree. A format is named by the
``prompt_format`` option of the LM tasks:

| value | prompt (not scored) | scored answer | tokenisation |
| --- | --- | --- | --- |
| ``auto`` (default) | ``chat`` when the tokenizer has a chat template, else ``plain`` | | |
| ``plain`` | ``Question: {question}\\nAnswer:`` | `` {answer}`` + EOS | separate, BOS added |
| ``chat`` | the tokenizer's chat template, one user turn | ``{answer}`` + EOS | separate |
| ``tofu-phi`` | ``Question: {question}\\n`` | ``Answer: {answer}`` + EOS | joint (TOFU) |
| ``tofu-llama2`` | ``[INST] {question} [/INST]`` | ``{answer}`` + EOS | joint (TOFU) |
| any text with ``{question}`` | that text | ``{answer}`` + EOS | joint |

The two ``tofu-*`` formats are TOFU's (``config/model_config.yaml`` of locuslab/tofu: Phi-1.5
and Llama-2-7b-chat): TOFU puts its answer tag ``"Answer: "`` in front of the answer, so those
tokens are scored with it, and there is no space between ``[/INST]`` and the answer.

*Joint* tokenisation is TOFU's: prompt and answer are tokenised as one text with the
tokenizer's own special tokens (a Llama tokenizer adds BOS; GPT-2 adds nothing), and the
first ``len(tokenize(prompt))`` tokens are the unscored prompt. *Separate* is moopt's own
encoding (``moopt.tasks.common.qa.encode_qa``): prompt and answer tokenised apart, BOS put in
front of a plain prompt when the tokenizer has one. Both append EOS to the answer.

A user template is any text containing ``{question}`` (nothing else is substituted; other
braces stay as they are). The escapes ``\\n`` and ``\\t`` in it become a newline and a tab,
so ``--prompt-format 'Q: {question}\\nA: '`` works from a shell.

Example:
    >>> from moopt.tasks.common.prompt_format import parse_prompt_format
    >>> fmt = parse_prompt_format("tofu-phi")
    >>> fmt.prompt_text(None, "Who is Ada?") + fmt.answer_text("A writer.")
    'Question: Who is Ada?\\nAnswer: A writer.'
    >>> parse_prompt_format("Q: {question}\\\\nA: ").prompt_text(None, "hi")
    'Q: hi\\nA: '
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUESTION_FIELD = "{question}"


@dataclass(frozen=True)
class PromptFormat:
    """A question-to-prompt rule (see the module docstring for the built-in ones).

    ``prompt``: the prompt text with ``{question}``, or None for the tokenizer's chat
    template. ``answer_prefix``: text put before the answer and scored with it. ``joint``:
    TOFU's tokenisation of prompt + answer as one text (else moopt's separate encoding).
    """

    name: str
    prompt: str | None
    answer_prefix: str = ""
    joint: bool = False

    def __post_init__(self) -> None:
        if self.prompt is not None and QUESTION_FIELD not in self.prompt:
            raise ValueError(f"prompt format {self.name!r}: the prompt {self.prompt!r} has no "
                             f"{QUESTION_FIELD} field")

    @property
    def chat(self) -> bool:
        """True when the prompt comes from the tokenizer's chat template."""
        return self.prompt is None

    def prompt_text(self, tokenizer: Any, question: str) -> str:
        """The prompt for ``question`` (what generation starts from)."""
        if not isinstance(question, str):
            raise TypeError(f"question must be a string, got {type(question).__name__}")
        if self.prompt is None:
            check_chat_template(tokenizer)
            messages = [{"role": "user", "content": question}]
            return tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        return self.prompt.replace(QUESTION_FIELD, question)

    def answer_text(self, answer: str) -> str:
        """The scored text of ``answer`` (EOS is appended by the encoder)."""
        if not isinstance(answer, str):
            raise TypeError(f"answer must be a string, got {type(answer).__name__}")
        return self.answer_prefix + answer


PLAIN = PromptFormat("plain", "Question: {question}\nAnswer:", " ")
CHAT = PromptFormat("chat", None)
TOFU_PHI = PromptFormat("tofu-phi", "Question: {question}\n", "Answer: ", joint=True)
TOFU_LLAMA2 = PromptFormat("tofu-llama2", "[INST] {question} [/INST]", "", joint=True)

BUILTIN: dict[str, PromptFormat | None] = {
    "auto": None,  # resolved against the tokenizer: chat if it has a template, else plain
    "plain": PLAIN,
    "chat": CHAT,
    "tofu-phi": TOFU_PHI,
    "tofu-llama2": TOFU_LLAMA2,
}


def check_prompt_format(value: str) -> str:
    """``value`` if it names a built-in format or is a template with ``{question}``; else a
    ValueError naming the value and the allowed ones (config validation)."""
    parse_prompt_format(value)
    return value


def parse_prompt_format(value: str | PromptFormat, tokenizer: Any = None) -> PromptFormat:
    """The ``PromptFormat`` of an option value. ``auto`` needs ``tokenizer`` to resolve (it
    resolves to ``plain`` when none is given)."""
    if isinstance(value, PromptFormat):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError(f"prompt_format must be a non-empty string, got {value!r}")
    if value in BUILTIN:
        fmt = BUILTIN[value]
        if fmt is None:
            return CHAT if has_chat_template(tokenizer) else PLAIN
        return fmt
    if QUESTION_FIELD not in value:
        raise ValueError(
            f"prompt_format {value!r} is neither a built-in format ({', '.join(BUILTIN)}) "
            f"nor a template containing {QUESTION_FIELD} (e.g. 'Q: {{question}}\\nA: ')")
    text = value.replace("\\n", "\n").replace("\\t", "\t")
    return PromptFormat("custom", text, "", joint=True)


def check_format_for_checkpoint(value: str, path: Path | None, flag: str = "--model") -> None:
    """Cheap check, from files only, that ``prompt_format=value`` can work: ``chat`` needs
    the checkpoint at ``path`` to declare a chat template (``tokenizer_config.json`` or
    ``chat_template.jinja``); without a checkpoint (``path`` None: the tasks' own tiny
    tokenizers, which have none) ``chat`` is an error."""
    parse_prompt_format(value)
    if value != "chat":
        return
    if path is None:
        raise ValueError("prompt_format 'chat' needs a tokenizer with a chat template; the "
                         "tiny models' tokenizer has none (pass --model, or another format)")
    if not checkpoint_has_chat_template(Path(path)):
        raise ValueError(f"prompt_format 'chat': the tokenizer of {flag} {str(path)!r} has "
                         "no chat template (tokenizer_config.json or chat_template.jinja)")


def checkpoint_has_chat_template(path: Path) -> bool:
    """Whether a local checkpoint's tokenizer files declare a chat template."""
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return True
    config = path / "tokenizer_config.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))
    except (ValueError, OSError):
        return False


def has_chat_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def check_chat_template(tokenizer: Any) -> None:
    """Raise when ``tokenizer`` has no chat template (``prompt_format='chat'``)."""
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"prompt_format 'chat': tokenizer {name!r} has no chat template; "
                         f"use one of {', '.join(k for k in BUILTIN if k != 'chat')} or a "
                         f"template with {QUESTION_FIELD}")
