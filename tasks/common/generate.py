"""Batched greedy decoding with left padding.

Example:
    >>> from moopt.tasks.common.tokenizer import train_tokenizer
    >>> from moopt.tasks.common.models import build_small_lm
    >>> from moopt.tasks.common.generate import greedy_generate
    >>> tok = train_tokenizer(["Question: hi\\nAnswer: hello"] * 2, vocab_size=300)
    >>> model = build_small_lm(tok, size="tiny", seed=0)
    >>> outs = greedy_generate(model, tok, ["Question: hi\\nAnswer:"] * 2, max_new_tokens=3)
    >>> len(outs) == 2 and outs[0] == outs[1]
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from moopt.tasks.common.prompt_format import PromptFormat, parse_prompt_format
from torch import nn


def greedy_generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    *,
    batch_size: int = 16,
    add_bos: bool | None = None,
    max_prompt_tokens: int | None = None,
    add_special_tokens: bool = False,
) -> list[str]:
    """Greedy continuations of ``prompts`` (already formatted, see ``qa.format_prompt``).

    Prompts are tokenised without special tokens and prefixed with BOS exactly as
    ``qa.encode_qa`` does: by default (``add_bos=None``) BOS is added when the tokenizer has
    one and no chat template (a chat template writes its own BOS into the prompt text);
    pass ``add_bos`` explicitly for plain prompts on a chat tokenizer. A prompt whose tokens
    already start with BOS never gets a second one. Prompts are then left-padded in
    batches of ``batch_size``, and decoded with the model's ``generate`` (no sampling),
    stopping at EOS. Returns only the new text, special tokens removed, surrounding
    whitespace stripped. The model is put in eval mode during decoding and restored after.
    Long prompts are not truncated unless ``max_prompt_tokens`` is given (then only their last
    ``max_prompt_tokens`` tokens, BOS included, are kept): prompt + ``max_new_tokens`` must
    fit the context. ``add_special_tokens=True`` tokenises the prompts with the tokenizer's
    own special tokens instead (TOFU's joint prompt formats, see ``prompt_format``) and adds
    no BOS of its own.
    """
    if not hasattr(model, "generate"):
        raise TypeError(
            f"greedy_generate needs a HF model with .generate(); got {type(model).__name__}"
        )
    if isinstance(prompts, str):
        raise TypeError("greedy_generate: prompts must be a list of strings, got one string")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if max_prompt_tokens is not None and (not isinstance(max_prompt_tokens, int)
                                          or max_prompt_tokens < 1):
        raise ValueError(f"max_prompt_tokens must be an int >= 1 or None, got "
                         f"{max_prompt_tokens!r}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("greedy_generate: tokenizer has neither a pad nor an eos token")
    if add_bos is None:
        add_bos = not getattr(tokenizer, "chat_template", None) and not add_special_tokens
    bos = tokenizer.bos_token_id if add_bos else None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            ids = [_encode(tokenizer, p, start + i, bos, add_special_tokens)
                   for i, p in enumerate(chunk)]
            if max_prompt_tokens is not None:
                ids = [x[-max_prompt_tokens:] for x in ids]
            width = max(len(x) for x in ids)
            input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for i, x in enumerate(ids):
                input_ids[i, width - len(x) :] = torch.tensor(x, dtype=torch.long)
                mask[i, width - len(x) :] = 1
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = out[:, width:].tolist()
            outputs += [decode_text(tokenizer, t) for t in new]
    finally:
        model.train(was_training)
    return outputs


def decode_text(tokenizer: Any, ids: Sequence[int]) -> str:
    """Generated token ids as text, without special tokens. A word-level tokenizer (this
    project's ``kind="word"``) joins its tokens with spaces ("I ' m sorry , but"); its text
    gets the usual clean-up of spaces before punctuation and around apostrophes ("I'm
    sorry, but"). Metrics are unaffected: ROUGE and the refusal scorer normalise the same
    way."""
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    word_level = type(model).__name__ == "WordLevel"
    return tokenizer.decode(ids, skip_special_tokens=True,
                            clean_up_tokenization_spaces=word_level).strip()


def _encode(tokenizer: Any, prompt: str, index: int, bos: int | None,
            add_special_tokens: bool) -> list[int]:
    if not isinstance(prompt, str):
        raise TypeError(f"prompts[{index}] is {type(prompt).__name__}, not str")
    ids = list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    if not ids:
        raise ValueError(f"prompts[{index}] is empty after tokenisation: {prompt!r}")
    return ids


def greedy_answers(model: nn.Module, tokenizer: Any, questions: Sequence[str], *,
                   max_new_tokens: int, max_length: int,
                   fmt: str | PromptFormat = "auto") -> list[str]:
    """Greedy answers of ``model`` to ``questions`` prompted as in training: the prompt of
    format ``fmt`` (see ``prompt_format``; plain/chat prompts get BOS when the tokenizer has
    one, joint formats the tokenizer's own special tokens), cut to its last ``max_length -
    max_new_tokens`` tokens, decoded without special tokens and stripped; one batch."""
    fmt = parse_prompt_format(fmt, tokenizer)
    prompts = [fmt.prompt_text(tokenizer, q) for q in questions]
    return greedy_generate(model, tokenizer, prompts, max_new_tokens,
                           batch_size=max(1, len(questions)),
                           add_bos=not fmt.joint and tokenizer.bos_token_id is not None,
                           add_special_tokens=fmt.joint,
                           max_prompt_tokens=max_length - max_new_tokens)
