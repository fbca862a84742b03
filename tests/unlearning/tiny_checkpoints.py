"""Tiny local Hugging Face checkpoints, built and saved by the tests (no download).

``llama``: a 2-layer Llama whose tokenizer adds BOS by itself (``add_special_tokens=True``),
like Llama-2's; ``gpt2``: a 2-layer GPT-2 whose tokenizer adds nothing, like GPT-2's and
Phi-1.5's. Both use a word-level tokenizer trained on the given texts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

TOFU_WORDS = "Question: Answer: [INST] [/INST] User: Bot:"


def tiny_tokenizer(texts: list[str], *, bos_post_processor: bool = False,
                   chat_template: str | None = None) -> Any:
    """A word-level tokenizer over ``texts`` (and the prompt-format words)."""
    from moopt.tasks.common.tokenizer import train_tokenizer

    tok = train_tokenizer([TOFU_WORDS, *texts], vocab_size=2048, kind="word")
    if bos_post_processor:
        from tokenizers import processors

        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def save_checkpoint(path: Path, arch: str, tokenizer: Any, seed: int) -> Path:
    """A random ``arch`` ("llama" or "gpt2") model for ``tokenizer``, saved with it."""
    from moopt.tasks.common.models import build_small_lm

    model = build_small_lm(tokenizer, arch, "tiny", seed=seed, context=128)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def tree_hash(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path`` (to show a checkpoint was left untouched)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}
