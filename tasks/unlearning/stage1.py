"""Stage 1 of unlearning: the target model (trained on forget + retain data) and the
retain-only model (the reference for forget quality), cached on disk.

The cache key hashes everything that determines the two models: the data (source and
sizes), tokenizer, architecture, fine-tuning budget, seed, and the ``--model`` checkpoint
(path, size and modification time of its files). A cache entry is built in a temporary
directory and renamed into place when complete, so an interrupted stage 1 never leaves a
half-written entry that a later run would trust.

The fine-tuning loop itself is generic and lives in :mod:`moopt.tasks.common.finetune` (re-exported
here).

Example:
    >>> from moopt.tasks.unlearning.config import UnlearningConfig
    >>> from moopt.tasks.unlearning.embedded import make_embedded
    >>> from moopt.tasks.unlearning.stage1 import cache_key
    >>> data = make_embedded(n_people=4, n_forget=1, facts_per_person=2, n_utility=4)
    >>> cache_key(UnlearningConfig(), data) == cache_key(UnlearningConfig(seed=1), data)
    False
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from moopt.tasks.common.cache import publish_entry
from moopt.tasks.common.finetune import finetune  # noqa: F401 (re-exported)
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.data import UnlearningData
from moopt.tasks.unlearning.lm_io import encode_batch, greedy_answers, training_batches
from torch import nn

# 2: fine-tuning seeds dropout (entries of version 1 came from unseeded runs).
CACHE_VERSION = 2


def evaluate(model: nn.Module, tokenizer: Any, data: UnlearningData, cfg: UnlearningConfig,
             retain_ratios: list[float] | None, *, rouge: bool | None = None,
             desc: str = "evaluate"):
    """TOFU metrics of ``model`` (see ``moopt.tasks.unlearning.evaluation``), showing the
    progress over the evaluation sets as ``desc``."""
    from moopt.tasks.unlearning.evaluation import EVAL_SETS, evaluate_unlearning

    from moopt.runner.progress import stage_progress

    n_sets = sum(1 for attr in EVAL_SETS.values() if getattr(data, attr))
    with stage_progress(desc, n_sets, unit="set", bar=cfg.progress) as progress:
        return evaluate_unlearning(
            model, tokenizer, data, retain_ratios,
            batch_size=cfg.eval_batch_size,
            rouge=cfg.rouge if rouge is None else rouge,
            batch_fn=lambda qs, ans: encode_batch(tokenizer, qs, ans, cfg.max_length),
            generate_fn=lambda qs: greedy_answers(model, tokenizer, qs,
                                                  max_new_tokens=cfg.max_new_tokens,
                                                  max_length=cfg.max_length),
            on_set_done=lambda name: progress.update(),
        )


@dataclass
class Prepared:
    """What stage 1 hands to stage 2 (``ctx.prepared`` of the unlearning task)."""

    data: UnlearningData
    tokenizer: Any
    target_dir: Path
    retain_dir: Path
    retain_truth_ratios: list[float]
    info: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def load_target(self) -> nn.Module:
        return _load_model(self.target_dir)


def _load_model(path: Path) -> nn.Module:
    from moopt.tasks.common.models import load_causal_lm

    model, _ = load_causal_lm(path, dtype=torch.float32)
    return model


def _checkpoint_fingerprint(path: Path) -> list[Any]:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def cache_key(cfg: UnlearningConfig, data: UnlearningData) -> str:
    """Hash of everything that determines the stage-1 models."""
    parts = {
        "version": CACHE_VERSION,
        "data": data.source,
        "sizes": data.sizes(),
        "tokenizer": [cfg.tokenizer, cfg.vocab_size],
        "model": [cfg.arch, cfg.model_size, cfg.max_length],
        "budget": [cfg.finetune_epochs, cfg.finetune_lr, cfg.finetune_batch_size],
        "seed": cfg.seed,
        "threads": cfg.threads,  # can change floating-point sums, hence the models
        "eval": [cfg.eval_subset, cfg.rouge, cfg.max_new_tokens],
        "checkpoint": (str(Path(cfg.model).resolve()), _checkpoint_fingerprint(Path(cfg.model)))
        if cfg.model else None,
    }
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _save(model: nn.Module, tokenizer: Any, path: Path) -> None:
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


def prepare_models(cfg: UnlearningConfig, data: UnlearningData, cache_root: Path, ctx) -> Prepared:
    """Build (or reuse) the target and retain-only models and their baseline metrics."""
    from moopt.tasks.common._deps import quiet_transformers
    from moopt.tasks.common.models import build_small_lm
    from moopt.tasks.common.tokenizer import load_tokenizer

    quiet_transformers()
    key = cache_key(cfg, data)
    entry = cache_root / "unlearning" / key
    if (entry / "info.json").is_file():
        info = json.loads((entry / "info.json").read_text())
        ctx.log(f"stage 1: reusing cached models {entry}")
        target_dir = Path(info["target_dir"]) if cfg.model else entry / "target"
        return Prepared(data, load_tokenizer(entry / "retain"), target_dir, entry / "retain",
                        info["retain_forget_truth_ratios"], info, cached=True)

    tmp = entry.with_name(entry.name + f".tmp-{time.time_ns()}")
    tmp.mkdir(parents=True)
    info: dict[str, Any] = {"key": key, "data": data.source, "data_sizes": data.sizes(),
                            "timings": {}}
    try:
        if cfg.model:
            with ctx.stage("load_model"):
                from moopt.tasks.common.models import load_causal_lm

                target, tokenizer = load_causal_lm(cfg.model, dtype=torch.float32)
            target_dir = Path(cfg.model).resolve()
        else:
            from moopt.tasks.unlearning.lm_io import make_tokenizer

            tokenizer = make_tokenizer(data, kind=cfg.tokenizer, vocab_size=cfg.vocab_size)
            target = build_small_lm(tokenizer, cfg.arch, cfg.model_size, seed=cfg.seed,
                                    context=max(cfg.max_length, 16))
            target_dir = tmp / "target"
        base = copy.deepcopy(target)
        info["n_params"] = sum(p.numel() for p in target.parameters())
        all_items = data.forget + data.retain + data.background
        if not cfg.model:
            start = time.perf_counter()
            with ctx.stage("finetune_target"):
                batches = training_batches(tokenizer, all_items, batch_size=cfg.finetune_batch_size,
                                           max_length=cfg.max_length, seed=cfg.seed)
                losses = finetune(target, batches, epochs=cfg.finetune_epochs,
                                  lr=cfg.finetune_lr, seed=cfg.seed,
                                  desc="stage 1: fine-tuning the target", bar=cfg.progress)
            info["timings"]["finetune_target"] = time.perf_counter() - start
            info["target_final_loss"] = sum(losses[-10:]) / len(losses[-10:])
            _save(target, tokenizer, target_dir)
        start = time.perf_counter()
        with ctx.stage("finetune_retain"):
            retain_model = base  # same initialisation (or the same --model checkpoint)
            batches = training_batches(tokenizer, data.retain + data.background,
                                       batch_size=cfg.finetune_batch_size,
                                       max_length=cfg.max_length, seed=cfg.seed + 1)
            losses = finetune(retain_model, batches, epochs=cfg.finetune_epochs,
                              lr=cfg.finetune_lr, seed=cfg.seed + 1,
                              desc="stage 1: fine-tuning the retain-only model",
                              bar=cfg.progress)
        info["timings"]["finetune_retain"] = time.perf_counter() - start
        info["retain_final_loss"] = sum(losses[-10:]) / len(losses[-10:])
        _save(retain_model, tokenizer, tmp / "retain")
        start = time.perf_counter()
        with ctx.stage("evaluate_stage1"):
            retain_eval = evaluate(retain_model, tokenizer, data, cfg, None,
                                   desc="stage 1: evaluating the retain-only model")
            target_eval = evaluate(target, tokenizer, data, cfg,
                                   retain_eval.forget_truth_ratios,
                                   desc="stage 1: evaluating the target")
        info["timings"]["evaluate_stage1"] = time.perf_counter() - start
        info["retain_forget_truth_ratios"] = retain_eval.forget_truth_ratios
        info["retain_model_metrics"] = retain_eval.metrics
        info["target_metrics"] = target_eval.metrics
        info["target_dir"] = str(target_dir)
        publish_entry(tmp, entry, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not cfg.model:
        target_dir = entry / "target"
    return Prepared(data, tokenizer, target_dir, entry / "retain",
                    info["retain_forget_truth_ratios"], info)
