"""Train, save and load small offline tokenizers (no download).

``train_tokenizer`` builds a byte-level BPE tokenizer (every string is encodable, no
unknown tokens; needs ``vocab_size >= 256 + 4``) or a word-level tokenizer (whitespace and
punctuation split; unseen words map to ``<unk>``; decoding joins tokens with spaces). The
special tokens are ``<pad>`` (id 0), ``<bos>`` (1), ``<eos>`` (2), ``<unk>`` (3). Training
is deterministic: the same texts in the same order give the same vocabulary.

Example:
    >>> from moopt.tasks.common.tokenizer import train_tokenizer
    >>> tok = train_tokenizer(["the cat sat on the mat"] * 3, vocab_size=300)
    >>> tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    (0, 1, 2)
    >>> tok.decode(tok("the cat")["input_ids"])
    'the cat'
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moopt.tasks.common._deps import require_tokenizers, require_transformers

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "unk_token": "<unk>",
}
KINDS = ("bpe", "word")


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, kind: str = "bpe") -> Any:
    """Train a tokenizer on ``texts`` and wrap it as a ``transformers.PreTrainedTokenizerFast``.

    ``kind="bpe"``: byte-level BPE; ``kind="word"``: word level. ``vocab_size`` counts the
    four special tokens. The tokenizer adds no special tokens by itself (``bos``/``eos`` are
    placed explicitly by ``moopt.tasks.common.qa``), and pads on the right.
    """
    tk = require_tokenizers()
    transformers = require_transformers()
    if kind not in KINDS:
        raise ValueError(f"tokenizer kind must be one of {KINDS}, got {kind!r}")
    texts = [t for t in texts]
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(
            f"train_tokenizer: texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not str"
        )
    if not texts:
        raise ValueError("train_tokenizer: no texts to train on")
    specials = list(SPECIAL_TOKENS.values())
    alphabet = tk.pre_tokenizers.ByteLevel.alphabet() if kind == "bpe" else []
    minimum = len(specials) + len(alphabet) if kind == "bpe" else len(specials) + 1
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ValueError(
            f"train_tokenizer: vocab_size must be an int >= {minimum} for kind={kind!r}, "
            f"got {vocab_size!r}"
        )
    if kind == "bpe":
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=alphabet,
            show_progress=False,
        )
    else:
        tok = tk.Tokenizer(tk.models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
        tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()
        trainer = tk.trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        )
    tok.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, padding_side="right", **SPECIAL_TOKENS
    )


def save_tokenizer(tokenizer: Any, directory: str | Path) -> Path:
    """Save with ``save_pretrained`` into ``directory`` (created if needed); returns it."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(path))
    return path


def load_tokenizer(directory: str | Path) -> Any:
    """Load a tokenizer saved by ``save_tokenizer`` (or any local HF tokenizer directory)."""
    transformers = require_transformers()
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {str(path)!r} does not exist")
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise FileNotFoundError(
            f"{str(path)!r} holds no tokenizer (no tokenizer.json or tokenizer_config.json)"
        )
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
