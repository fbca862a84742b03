"""Stage 1 of the safety task: the starting model, cached on disk.

Without ``--model``: a word-level tokenizer trained on the task's text and a tiny GPT-2 /
Llama pre-trained (plain AdamW, answer cross-entropy) on the utility data and the
safe-but-scary prompts, so that it answers benign prompts, and answers harmful prompts too
(nothing taught it to refuse). With ``--model PATH``: that local checkpoint, as is.
Either way the starting model is evaluated once (``info["start_metrics"]``), so every run
can show how far stage 2 moved refusal, over-refusal and utility.

The cache entry (``<cache_dir>/safety/<key>``) is keyed on everything that determines the
model and its evaluation, built in a temporary directory and renamed into place when
complete.

Example:
    >>> from moopt.tasks.safety.config import SafetyConfig
    >>> from moopt.tasks.safety.sources import load_safety_data
    >>> from moopt.tasks.safety.stage1 import cache_key
    >>> cfg = SafetyConfig()
    >>> cache_key(cfg, load_safety_data(cfg)) == cache_key(cfg, load_safety_data(cfg))
    True
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from moopt.tasks.common.cache import new_temp_entry, publish_entry
from moopt.tasks.common.prompt_format import PromptFormat, parse_prompt_format
from moopt.tasks.safety.config import SafetyConfig
from moopt.tasks.safety.data import Example, SafetyDataError
from moopt.tasks.safety.sources import SafetyData
from torch import nn

# 2: fine-tuning seeds dropout (entries of version 1 came from unseeded runs).
CACHE_VERSION = 2


@dataclass
class Prepared:
    """What stage 1 hands to stage 2 (``ctx.prepared``)."""

    data: SafetyData
    tokenizer: Any
    model_dir: Path
    info: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def load_model(self) -> nn.Module:
        from moopt.tasks.common.models import load_causal_lm

        model, _ = load_causal_lm(self.model_dir, dtype=torch.float32)
        return model


def check_tokenizer_and_context(tokenizer: Any, model: nn.Module, cfg: SafetyConfig,
                                where: str) -> None:
    """Clear errors for a tokenizer without padding and a ``max_length`` over the context."""
    from moopt.tasks.common.models import context_length

    if tokenizer.pad_token_id is None:
        raise SafetyDataError(
            f"{where}: the tokenizer has no pad token (and no eos token to pad with); "
            "set tokenizer.pad_token in the checkpoint's tokenizer_config.json"
        )
    ctx = context_length(model)
    if ctx is not None and cfg.max_length > ctx:
        raise SafetyDataError(
            f"{where}: max_length {cfg.max_length} exceeds the model's context of {ctx} "
            f"tokens; pass --max-length {ctx} or less (longer prompts are cut from the left)"
        )
    if cfg.max_new_tokens >= cfg.max_length:
        raise SafetyDataError(
            f"max_new_tokens {cfg.max_new_tokens} must be smaller than max_length "
            f"{cfg.max_length} (the prompt needs room)"
        )


def sft_batches(tokenizer: Any, items: list[Example], *, batch_size: int, max_length: int,
                seed: int, fmt: str | PromptFormat = "auto") -> list[dict[str, torch.Tensor]]:
    """Length-bucketed, padded (prompt, answer) batches in prompt format ``fmt``; labels
    only on answer tokens."""
    from moopt.tasks.common.batching import collate, length_bucketed_batches
    from moopt.tasks.common.qa import encode_pair

    if not items:
        raise SafetyDataError("sft_batches: no training items")
    fmt = parse_prompt_format(fmt, tokenizer)
    encoded = [encode_pair(tokenizer, e.prompt_text, e.answer or "", max_length=max_length,
                           fmt=fmt) for e in items]
    idx = length_bucketed_batches([len(x) for x in encoded], batch_size, seed=seed)
    return [collate([encoded[i] for i in b], tokenizer.pad_token_id) for b in idx]


def _fingerprint(path: Path) -> list[Any]:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def cache_key(cfg: SafetyConfig, data: SafetyData) -> str:
    """Hash of everything that determines the starting model and its evaluation."""
    parts = {
        "version": CACHE_VERSION,
        "data": [data.source, data.sizes(), data.notes, cfg.data_seed, cfg.eval_subset,
                 cfg.harmful_eval_sets, cfg.benign_eval_sets],
        "model": [cfg.arch, cfg.model_size, cfg.tokenizer, cfg.vocab_size, cfg.max_length],
        "pretrain": [cfg.pretrain_epochs, cfg.pretrain_lr, cfg.pretrain_batch_size],
        # The seed draws the initial weights and batch order, the thread count can change
        # floating-point sums: a cached model from another seed or thread count is another
        # model (reusing it made results depend on what the cache held). Left out at their
        # defaults, like the prompt format, so that existing entries stay valid.
        **({"seed": cfg.seed} if cfg.seed else {}),
        **({"threads": cfg.threads} if cfg.threads is not None else {}),
        "eval": [cfg.scorer, cfg.max_new_tokens],
        # Left out at its default, so that entries made before the option existed stay valid.
        **({"prompt_format": cfg.prompt_format} if cfg.prompt_format != "auto" else {}),
        "checkpoint": [str(Path(cfg.model).resolve()), _fingerprint(Path(cfg.model))]
        if cfg.model else None,
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def evaluate_model(model: nn.Module, tokenizer: Any, data: SafetyData, cfg: SafetyConfig,
                   desc: str = "evaluate"):
    """Every safety metric of ``model``, showing the progress over the sets as ``desc``."""
    from moopt.tasks.safety.evaluation import evaluate_safety
    from moopt.tasks.safety.refusal import get_scorer

    from moopt.runner.progress import stage_progress

    n_sets = sum(1 for items in data.eval.values() if items)
    with stage_progress(desc, n_sets, unit="set", bar=cfg.progress) as progress:
        return evaluate_safety(model, tokenizer, data, get_scorer(cfg.scorer),
                               max_new_tokens=cfg.max_new_tokens, max_length=cfg.max_length,
                               batch_size=cfg.eval_batch_size, fmt=cfg.prompt_format,
                               on_set_done=lambda name: progress.update())


def prepare_start_model(cfg: SafetyConfig, data: SafetyData, cache_root: Path, ctx) -> Prepared:
    """Build (or reuse from the cache) the starting model and its metrics."""
    from moopt.tasks.common._deps import quiet_transformers
    from moopt.tasks.common.models import build_small_lm, load_causal_lm
    from moopt.tasks.common.tokenizer import load_tokenizer, train_tokenizer

    quiet_transformers()  # no "Writing model shards" bar when the model is saved
    key = cache_key(cfg, data)
    entry = Path(cache_root) / "safety" / key
    if (entry / "info.json").is_file():
        info = json.loads((entry / "info.json").read_text())
        ctx.log(f"stage 1: reusing cached starting model {entry}")
        model_dir = Path(cfg.model).resolve() if cfg.model else entry / "model"
        tok_dir = model_dir if cfg.model else entry / "model"
        tokenizer = load_tokenizer(tok_dir)
        if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # as load_causal_lm does
        return Prepared(data, tokenizer, model_dir, info, cached=True)

    tmp = new_temp_entry(entry)
    info: dict[str, Any] = {"key": key, "data": data.source, "data_sizes": data.sizes(),
                            "notes": data.notes, "timings": {}}
    try:
        if cfg.model:
            with ctx.stage("load_model"):
                model, tokenizer = load_causal_lm(cfg.model, dtype=torch.float32)
            model_dir = Path(cfg.model).resolve()
            check_tokenizer_and_context(tokenizer, model, cfg, f"--model {cfg.model}")
        else:
            start = time.perf_counter()
            with ctx.stage("pretrain"):
                vocab = max(cfg.vocab_size, 300) if cfg.tokenizer == "bpe" else cfg.vocab_size
                tokenizer = train_tokenizer(["Question: Answer:", *data.all_texts()],
                                            vocab_size=vocab, kind=cfg.tokenizer)
                model = build_small_lm(tokenizer, cfg.arch, cfg.model_size, seed=cfg.seed,
                                       context=max(cfg.max_length, 16))
                check_tokenizer_and_context(tokenizer, model, cfg, "stage 1")
                items = data.train["utility"] + data.train["no_overrefusal"]
                batches = sft_batches(tokenizer, items, batch_size=cfg.pretrain_batch_size,
                                      max_length=cfg.max_length, seed=cfg.seed,
                                      fmt=cfg.prompt_format)
                losses = _finetune(model, batches, epochs=cfg.pretrain_epochs,
                                   lr=cfg.pretrain_lr, seed=cfg.seed, bar=cfg.progress)
            info["timings"]["pretrain"] = time.perf_counter() - start
            info["pretrain_final_loss"] = sum(losses[-10:]) / len(losses[-10:])
            model_dir = tmp / "model"
            model.save_pretrained(str(model_dir))
            tokenizer.save_pretrained(str(model_dir))
        info["n_params"] = sum(p.numel() for p in model.parameters())
        start = time.perf_counter()
        with ctx.stage("evaluate_start"):
            before = evaluate_model(model, tokenizer, data, cfg,
                                    desc="stage 1: evaluating the starting model")
        info["timings"]["evaluate_start"] = time.perf_counter() - start
        info["start_metrics"] = before.metrics
        info["start_examples"] = {k: v[: cfg.report_examples] for k, v in before.responses.items()}
        publish_entry(tmp, entry, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not cfg.model:
        model_dir = entry / "model"
    return Prepared(data, tokenizer, model_dir, info)


def _finetune(model: nn.Module, batches: list[dict[str, torch.Tensor]], *, epochs: float,
              lr: float, seed: int, bar: bool = True) -> list[float]:
    from moopt.tasks.common.finetune import finetune

    return finetune(model, batches, epochs=epochs, lr=lr, seed=seed,
                    desc="stage 1: pre-training the starting model", bar=bar)
