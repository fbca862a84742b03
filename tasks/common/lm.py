"""The small offline LM toolkit shared by the unlearning and safety tasks (one import).

Tokenizers (``tokenizer``), random or local HF causal LMs (``models``), prompt/answer
encoding (``qa``), length-bucketed batching (``batching``) and greedy decoding
(``generate``). Everything runs offline; ``transformers`` and ``tokenizers`` are imported
lazily (``pip install moopt[llm]``).

Example:
    >>> from moopt.tasks.common.lm import (build_small_lm, encode_qa_pairs, iterate_batches,
    ...                              train_tokenizer)
    >>> pairs = [("Who wrote X?", "Ann Lee wrote X."), ("Where is Y?", "Y is in Oslo.")]
    >>> tok = train_tokenizer([q + " " + a for q, a in pairs] * 4, vocab_size=300)
    >>> model = build_small_lm(tok, arch="gpt2", size="tiny", seed=0)
    >>> examples = encode_qa_pairs(tok, pairs, max_length=64)
    >>> batch = next(iterate_batches(examples, 2, pad_token_id=tok.pad_token_id, seed=0))
    >>> model(**batch).loss.item() > 0
    True
"""

from __future__ import annotations

from moopt.tasks.common.batching import (
    BucketedBatchSampler,
    collate,
    iterate_batches,
    length_bucketed_batches,
)
from moopt.tasks.common.generate import greedy_generate
from moopt.tasks.common.models import ARCHS, SIZES, build_small_lm, context_length, load_causal_lm
from moopt.tasks.common.qa import (
    IGNORE_INDEX,
    PLAIN_TEMPLATE,
    EncodedQA,
    PromptTemplate,
    encode_qa,
    encode_qa_pairs,
    format_prompt,
)
from moopt.tasks.common.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

__all__ = [
    "ARCHS",
    "IGNORE_INDEX",
    "PLAIN_TEMPLATE",
    "SIZES",
    "BucketedBatchSampler",
    "EncodedQA",
    "PromptTemplate",
    "build_small_lm",
    "collate",
    "context_length",
    "encode_qa",
    "encode_qa_pairs",
    "format_prompt",
    "greedy_generate",
    "iterate_batches",
    "length_bucketed_batches",
    "load_causal_lm",
    "load_tokenizer",
    "save_tokenizer",
    "train_tokenizer",
]
