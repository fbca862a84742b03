"""Build small random causal LMs offline, and load local HF causal-LM checkpoints.

Example:
    >>> from moopt.tasks.common.tokenizer import train_tokenizer
    >>> from moopt.tasks.common.models import build_small_lm
    >>> tok = train_tokenizer(["a tiny corpus for a tiny model"] * 2, vocab_size=300)
    >>> model = build_small_lm(tok, arch="llama", size="tiny", seed=0)
    >>> type(model).__name__, model.config.vocab_size == len(tok)
    ('LlamaForCausalLM', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from moopt.tasks.common._deps import quiet_transformers, require_transformers
from torch import nn

ARCHS = ("gpt2", "llama")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
)
SIZES: dict[str, dict[str, int]] = {
    # hidden width, layers, attention heads, context length
    "tiny": {"d_model": 64, "n_layers": 2, "n_heads": 2, "context": 256},
    "small": {"d_model": 256, "n_layers": 4, "n_heads": 4, "context": 512},
}


def _config(transformers: Any, arch: str, dims: dict[str, int], vocab: int, ids: dict) -> Any:
    d, n_layers, n_heads, ctx = dims["d_model"], dims["n_layers"], dims["n_heads"], dims["context"]
    if arch == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab, n_positions=ctx, n_embd=d, n_layer=n_layers, n_head=n_heads, **ids
        )
    return transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=4 * d,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        max_position_embeddings=ctx,
        tie_word_embeddings=True,
        **ids,
    )


def build_small_lm(
    tokenizer: Any,
    arch: str = "gpt2",
    size: str = "tiny",
    *,
    seed: int = 0,
    context: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """A randomly initialised HF causal LM sized for ``tokenizer`` (``len(tokenizer)`` tokens).

    ``arch`` is ``"gpt2"`` or ``"llama"``; ``size`` picks dimensions from ``SIZES`` ("tiny":
    width 64, 2 layers, ~0.1M parameters plus embeddings; "small": width 256, 4 layers).
    ``context`` overrides the maximum sequence length. Initialisation uses ``seed`` in a
    forked RNG, so the global torch RNG is left untouched and the same seed gives the same
    weights. The tokenizer's pad/bos/eos ids are written into the config.
    """
    transformers = require_transformers()
    if arch not in ARCHS:
        raise ValueError(f"build_small_lm: arch must be one of {ARCHS}, got {arch!r}")
    if size not in SIZES:
        raise ValueError(f"build_small_lm: size must be one of {tuple(SIZES)}, got {size!r}")
    dims = dict(SIZES[size])
    if context is not None:
        if not isinstance(context, int) or context < 2:
            raise ValueError(f"build_small_lm: context must be an int >= 2, got {context!r}")
        dims["context"] = context
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = _config(transformers, arch, dims, len(tokenizer), ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config)
    return model.to(dtype)


def context_length(model: nn.Module) -> int | None:
    """Maximum sequence length from the model's config (None if it declares none)."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _causal_lm_model_types() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _causal_lm_classes() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update(value if isinstance(value, (tuple, list)) else [value])
    return names


def load_causal_lm(
    path: str | Path, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, Any]:
    """Load ``(model, tokenizer)`` from a local HF checkpoint directory (never downloads).

    Raises ``FileNotFoundError`` when the directory, its ``config.json`` or its tokenizer is
    missing, and ``ValueError`` naming the path and the architecture found when the
    checkpoint is not a causal LM (e.g. a sequence classifier or an encoder). A tokenizer
    without a pad token gets ``pad_token = eos_token`` (needed for batching).
    """
    transformers = quiet_transformers()
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model directory {str(p)!r} does not exist")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{str(p)!r} is not a HF checkpoint: it has no config.json")
    config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
    archs = list(getattr(config, "architectures", None) or [])
    if archs:
        ok = any(a in _causal_lm_classes() for a in archs)
    else:  # no declared class: fall back on the model type having a causal-LM head
        ok = config.model_type in _causal_lm_model_types()
    if not ok:
        found = ", ".join(archs) if archs else f"model_type {config.model_type!r}"
        raise ValueError(
            f"{str(p)!r} is not a causal language model: its config declares {found}; "
            "expected an architecture such as GPT2LMHeadModel or LlamaForCausalLM"
        )
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = transformers.AutoModelForCausalLM.from_pretrained(str(p), **kwargs).to(device)
    # transformers would silently build an empty tokenizer when the files are missing
    if not any((p / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{str(p)!r} has a model but no tokenizer (none of {', '.join(TOKENIZER_FILES)})"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"{str(p)!r} has a model but no loadable tokenizer: {err}") from err
    vocab = getattr(model.config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise ValueError(
            f"{str(p)!r}: tokenizer has {len(tokenizer)} tokens but the model's vocabulary "
            f"has only {vocab}"
        )
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
