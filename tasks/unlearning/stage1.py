"""Stage 1 of unlearning: the target model and the forget-quality reference, cached on disk.

Two paths:

- **Tiny models (no ``--model``)**: a tokenizer trained on the data and a small LM
  fine-tuned on forget + retain (+ background) data is the target; a second model from the
  same initialisation, fine-tuned on retain (+ background) data only, is the retain-only
  model whose forget-set truth ratios define forget quality.
- **A real checkpoint (``--model PATH``)**: that checkpoint is the target, as is; nothing is
  trained. The reference is either ``--retain-model PATH`` (a model fine-tuned on the retain
  split only, evaluated here; its files are only read) or ``--retain-logs DIR`` (that
  model's TOFU eval logs, read). A retain model is never derived from the target: a model
  fine-tuned from the target still knows the forget set.

Both paths evaluate the target (and a retain model they have) once; the metrics go to the
report and their TOFU-format logs into the cache entry (``tofu_logs/target``,
``tofu_logs/retain_model``), copied into the run directory by the task.

The cache key hashes everything that determines these models and evaluations: the data
(source and sizes), tokenizer, architecture, fine-tuning budget, seed, prompt format,
evaluation options, every checkpoint or log folder given (path, size and modification
time of its files) and, for checkpoints, the device type and dtype stage 1 evaluates in
(``placement``). A cache entry is built in a temporary directory and renamed into place
when complete, so an interrupted stage 1 never leaves a half-written entry that a later
run would trust.

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
from moopt.tasks.common.cache import new_temp_entry, publish_entry
from moopt.tasks.common.finetune import finetune  # noqa: F401 (re-exported)
from moopt.tasks.common.prompt_format import PromptFormat, parse_prompt_format
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.data import UnlearningData
from moopt.tasks.unlearning.lm_io import training_batches
from torch import nn

# 2: fine-tuning seeds dropout (entries of version 1 came from unseeded runs).
CACHE_VERSION = 2
# Stage-1 TOFU logs inside a cache entry (and, copied, inside the run's tofu_logs/).
STAGE1_LOGS = ("target", "retain_model")


def evaluate(model: nn.Module, tokenizer: Any, data: UnlearningData, cfg: UnlearningConfig,
             retain_ratios: list[float] | None, *, rouge: bool | None = None,
             desc: str = "evaluate"):
    """TOFU metrics of ``model`` (see ``moopt.tasks.unlearning.evaluation``), with the
    config's prompt format resolved against ``tokenizer``, showing the progress over the
    evaluation sets as ``desc``."""
    from moopt.tasks.unlearning.evaluation import EVAL_SETS, evaluate_unlearning

    from moopt.runner.progress import stage_progress

    n_sets = sum(1 for attr in EVAL_SETS.values() if getattr(data, attr))
    with stage_progress(desc, n_sets, unit="set", bar=cfg.progress) as progress:
        return evaluate_unlearning(
            model, tokenizer, data, retain_ratios,
            batch_size=cfg.eval_batch_size,
            max_new_tokens=cfg.max_new_tokens,
            max_length=cfg.max_length,
            rouge=cfg.rouge if rouge is None else rouge,
            prompt_format=parse_prompt_format(cfg.prompt_format, tokenizer),
            on_set_done=lambda name: progress.update(),
        )


@dataclass
class Prepared:
    """What stage 1 hands to stage 2 (``ctx.prepared`` of the unlearning task).

    ``retain_dir``: the retain-only model (trained here, or ``--retain-model``; None with
    ``--retain-logs``). ``entry``: the cache entry, holding the stage-1 TOFU logs.
    """

    data: UnlearningData
    tokenizer: Any
    target_dir: Path
    retain_dir: Path | None
    retain_truth_ratios: list[float]
    info: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    entry: Path | None = None

    def load_target(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        return _load_model(self.target_dir, dtype)

    @property
    def prompt_format(self) -> PromptFormat:
        """The run's prompt format, resolved against the target's tokenizer."""
        return parse_prompt_format(self.info.get("prompt_format", "auto"), self.tokenizer)


def _load_model(path: Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    from moopt.tasks.common.models import load_causal_lm

    model, _ = load_causal_lm(path, dtype=dtype)
    return model


def _checkpoint_fingerprint(path: Path) -> list[Any]:
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _fingerprint(path: Path | None) -> list[Any] | None:
    return None if path is None else [str(Path(path).resolve()),
                                      _checkpoint_fingerprint(Path(path))]


def cache_key(cfg: UnlearningConfig, data: UnlearningData) -> str:
    """Hash of everything that determines the stage-1 models and their evaluation."""
    parts: dict[str, Any] = {
        "version": CACHE_VERSION,
        "data": data.source,
        "sizes": data.sizes(),
        "eval": [cfg.eval_subset, cfg.rouge, cfg.max_new_tokens],
    }
    if cfg.model:  # the checkpoint path: nothing is trained, so no budget or architecture
        from moopt.tasks.unlearning.placement import load_dtype, run_device

        parts.update(protocol="checkpoint", checkpoint=_fingerprint(cfg.model),
                     retain_model=_fingerprint(cfg.retain_model),
                     retain_logs=_fingerprint(cfg.retain_logs),
                     max_length=cfg.max_length, prompt_format=cfg.prompt_format,
                     # where and in which dtype stage 1 evaluates changes its numbers
                     placement=[run_device(cfg).type, str(load_dtype(cfg))])
    else:
        parts.update(tokenizer=[cfg.tokenizer, cfg.vocab_size],
                     model=[cfg.arch, cfg.model_size, cfg.max_length],
                     budget=[cfg.finetune_epochs, cfg.finetune_lr, cfg.finetune_batch_size],
                     seed=cfg.seed, checkpoint=None)
        # Left out at its default, so that entries made before the option existed stay valid.
        if cfg.prompt_format != "auto":
            parts["prompt_format"] = cfg.prompt_format
        if cfg.threads is not None:  # the thread count can change floating-point sums
            parts["threads"] = cfg.threads
    if cfg.eval_first is not None:
        parts["eval_first"] = cfg.eval_first
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _save(model: nn.Module, tokenizer: Any, path: Path) -> None:
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


def _write_logs(result: Any, tmp: Path, name: str) -> None:
    from moopt.tasks.unlearning.tofu_logs import write_logs

    write_logs(result, tmp / "tofu_logs" / name)


def _checkpoint_tokenizer(path: Path) -> Any:
    """The tokenizer of a checkpoint, padded as ``load_causal_lm`` pads it."""
    from moopt.tasks.common.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(path)
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prepare_models(cfg: UnlearningConfig, data: UnlearningData, cache_root: Path, ctx) -> Prepared:
    """Build (or reuse) the target and the forget-quality reference and their metrics."""
    from moopt.tasks.common._deps import quiet_transformers

    quiet_transformers()
    key = cache_key(cfg, data)
    entry = cache_root / "unlearning" / key
    if (entry / "info.json").is_file():
        info = json.loads((entry / "info.json").read_text())
        ctx.log(f"stage 1: reusing cached models {entry}")
        if cfg.model:
            return Prepared(data, _checkpoint_tokenizer(Path(cfg.model)), Path(info["target_dir"]),
                            _retain_dir(cfg), info["retain_forget_truth_ratios"], info,
                            cached=True, entry=entry)
        from moopt.tasks.common.tokenizer import load_tokenizer

        return Prepared(data, load_tokenizer(entry / "retain"), entry / "target",
                        entry / "retain", info["retain_forget_truth_ratios"], info,
                        cached=True, entry=entry)
    tmp = new_temp_entry(entry)
    info: dict[str, Any] = {"key": key, "data": data.source, "data_sizes": data.sizes(),
                            "timings": {}, "prompt_format": cfg.prompt_format}
    try:
        if cfg.model:
            prepared = _from_checkpoints(cfg, data, tmp, info, ctx)
        else:
            prepared = _train_tiny_models(cfg, data, tmp, info, ctx)
        publish_entry(tmp, entry, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prepared.entry = entry
    if not cfg.model:
        prepared.target_dir, prepared.retain_dir = entry / "target", entry / "retain"
    return prepared


def _retain_dir(cfg: UnlearningConfig) -> Path | None:
    return Path(cfg.retain_model).resolve() if cfg.retain_model else None


def _from_checkpoints(cfg: UnlearningConfig, data: UnlearningData, tmp: Path,
                      info: dict[str, Any], ctx) -> Prepared:
    """``--model``: the checkpoint is the target, the reference is ``--retain-model`` or
    ``--retain-logs``; nothing is trained."""
    from moopt.tasks.common.models import load_causal_lm
    from moopt.tasks.unlearning.placement import load_dtype, run_device

    # Stage 1 evaluates where the run trains, in the run's weight dtype.
    device, dtype = run_device(cfg), load_dtype(cfg)
    if cfg.retain_logs is not None:
        from moopt.tasks.unlearning.tofu_score import reference_summary, retain_truth_ratios

        # Read first: a log over another forget set fails before any model is loaded.
        ratios = retain_truth_ratios(cfg.retain_logs, len(data.forget_eval))
        info["retain_model_metrics"] = reference_summary(cfg.retain_logs)
        info["reference"] = f"--retain-logs {cfg.retain_logs}"
    else:
        start = time.perf_counter()
        with ctx.stage("evaluate_retain_model"):
            retain, retain_tok = load_causal_lm(cfg.retain_model, dtype=dtype, device=device)
            result = evaluate(retain, retain_tok, data, cfg, None,
                              desc="stage 1: evaluating the retain model")
            del retain
            _free(device)
        info["timings"]["evaluate_retain_model"] = time.perf_counter() - start
        _write_logs(result, tmp, "retain_model")
        ratios = result.forget_truth_ratios
        info["retain_model_metrics"] = result.metrics
        info["reference"] = f"--retain-model {cfg.retain_model}"
    start = time.perf_counter()
    with ctx.stage("load_model"):
        target, tokenizer = load_causal_lm(cfg.model, dtype=dtype, device=device)
    info["n_params"] = sum(p.numel() for p in target.parameters())
    with ctx.stage("evaluate_target"):
        result = evaluate(target, tokenizer, data, cfg, ratios,
                          desc="stage 1: evaluating the target")
    del target
    _free(device)
    info["timings"]["evaluate_target"] = time.perf_counter() - start
    _write_logs(result, tmp, "target")
    info["target_metrics"] = result.metrics
    info["retain_forget_truth_ratios"] = ratios
    target_dir = Path(cfg.model).resolve()
    info["target_dir"] = str(target_dir)
    return Prepared(data, tokenizer, target_dir, _retain_dir(cfg), ratios, info)


def _free(device: torch.device) -> None:
    """Give a deleted model's GPU memory back before the next one loads."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _train_tiny_models(cfg: UnlearningConfig, data: UnlearningData, tmp: Path,
                       info: dict[str, Any], ctx) -> Prepared:
    """No ``--model``: train a tokenizer, the target and the retain-only model from scratch."""
    from moopt.tasks.common.models import build_small_lm
    from moopt.tasks.unlearning.lm_io import make_tokenizer

    tokenizer = make_tokenizer(data, kind=cfg.tokenizer, vocab_size=cfg.vocab_size)
    fmt = parse_prompt_format(cfg.prompt_format, tokenizer)
    target = build_small_lm(tokenizer, cfg.arch, cfg.model_size, seed=cfg.seed,
                            context=max(cfg.max_length, 16))
    retain_model = copy.deepcopy(target)  # same initialisation
    info["n_params"] = sum(p.numel() for p in target.parameters())
    start = time.perf_counter()
    with ctx.stage("finetune_target"):
        batches = training_batches(tokenizer, data.forget + data.retain + data.background,
                                   batch_size=cfg.finetune_batch_size,
                                   max_length=cfg.max_length, seed=cfg.seed, fmt=fmt)
        losses = finetune(target, batches, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                          seed=cfg.seed, desc="stage 1: fine-tuning the target",
                          bar=cfg.progress)
    info["timings"]["finetune_target"] = time.perf_counter() - start
    info["target_final_loss"] = sum(losses[-10:]) / len(losses[-10:])
    _save(target, tokenizer, tmp / "target")
    start = time.perf_counter()
    with ctx.stage("finetune_retain"):
        batches = training_batches(tokenizer, data.retain + data.background,
                                   batch_size=cfg.finetune_batch_size,
                                   max_length=cfg.max_length, seed=cfg.seed + 1, fmt=fmt)
        losses = finetune(retain_model, batches, epochs=cfg.finetune_epochs,
                          lr=cfg.finetune_lr, seed=cfg.seed + 1,
                          desc="stage 1: fine-tuning the retain-only model", bar=cfg.progress)
    info["timings"]["finetune_retain"] = time.perf_counter() - start
    info["retain_final_loss"] = sum(losses[-10:]) / len(losses[-10:])
    _save(retain_model, tokenizer, tmp / "retain")
    start = time.perf_counter()
    with ctx.stage("evaluate_stage1"):
        retain_eval = evaluate(retain_model, tokenizer, data, cfg, None,
                               desc="stage 1: evaluating the retain-only model")
        target_eval = evaluate(target, tokenizer, data, cfg, retain_eval.forget_truth_ratios,
                               desc="stage 1: evaluating the target")
    info["timings"]["evaluate_stage1"] = time.perf_counter() - start
    _write_logs(retain_eval, tmp, "retain_model")
    _write_logs(target_eval, tmp, "target")
    info["retain_forget_truth_ratios"] = retain_eval.forget_truth_ratios
    info["retain_model_metrics"] = retain_eval.metrics
    info["target_metrics"] = target_eval.metrics
    info["target_dir"] = str(tmp / "target")
    return Prepared(data, tokenizer, tmp / "target", tmp / "retain",
                    info["retain_forget_truth_ratios"], info)
