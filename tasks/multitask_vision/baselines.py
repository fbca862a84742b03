"""Single-task baselines for delta_m: one model per task, trained with the same budget.

"Same budget" here means the same number of optimizer steps, batch size, learning rate,
betas, weight decay and seed as the multi-task run, on the same data, with AdamW (the
``shared`` policy with one objective, which equals torch's AdamW) and fp32 state. Each
baseline is trained by the runner's own loop and evaluated on the same test set.

Results are cached in memory and as small JSON files under
``CACHE_DIR/multitask_vision/baselines/`` keyed by everything that determines them, so a
comparison grid (policies x storages x modes) trains each baseline once per seed.

Example:
    >>> import tempfile, pathlib
    >>> from moopt.tasks.multitask_vision.baselines import BaselineCache
    >>> from moopt.tasks.multitask_vision.config import MultitaskVisionConfig
    >>> from moopt.tasks.multitask_vision.data import load_data
    >>> cfg = MultitaskVisionConfig(n_train=64, n_test=32, steps=2, batch_size=16)
    >>> cache = BaselineCache(pathlib.Path(tempfile.mkdtemp()))
    >>> sorted(cache.get(cfg, load_data(cfg), "left"))
    ['acc_left']
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from moopt.tasks.multitask_vision.config import MultitaskVisionConfig
from moopt.tasks.multitask_vision.data import TaskData, data_key
from moopt.tasks.multitask_vision.evaluation import evaluate_model

from moopt.runner.atomic import write_text_atomic
from moopt.runner.config import validate_config
from moopt.runner.loop import train

CACHE_VERSION = 1
# Fields that define a baseline besides the data (``threads``, ``device`` and ``parallel``
# too: they can change the floating-point bits); policy, storage, mode, weights and lr
# ratios are multi-task choices and deliberately absent. A baseline trains on the run's
# device, precision and ranks.
BUDGET_FIELDS = ("seed", "steps", "epochs", "batch_size", "lr", "betas", "eps",
                 "weight_decay", "max_grad_norm", "model", "threads", "device", "precision",
                 "grad_accum", "parallel")


def baseline_config(cfg: MultitaskVisionConfig, task: str) -> MultitaskVisionConfig:
    """The config of ``task``'s single-task baseline for the run ``cfg``."""
    data = cfg.model_dump()
    data.update(tasks=[task], policy="shared", storage="fp32", mode="alternating",
                schedule=None, weights=None, lr_ratios={}, optimizer_options={}, out=None,
                eval_every=0, checkpoint_every=0, progress=False, baselines=False)
    return validate_config(type(cfg), data)


def baseline_key(cfg: MultitaskVisionConfig, task: str) -> str:
    spec: dict[str, Any] = {"version": CACHE_VERSION, "task": task,
                            "data": [str(x) for x in data_key(cfg)]}
    spec.update({f: str(getattr(cfg, f)) for f in BUDGET_FIELDS})
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def train_baseline(cfg: MultitaskVisionConfig, data: TaskData, task: str) -> dict[str, float]:
    """Train and evaluate ``task`` alone; the caller's RNG state is left untouched."""
    from moopt.tasks.multitask_vision.setup import make_setup

    bcfg = baseline_config(cfg, task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(bcfg.seed)
        setup = make_setup(bcfg, data, tasks=[task])
        result = train(setup, bcfg, evaluate=lambda: evaluate_model(
            setup.model, data.test, batch_size=cfg.eval_batch_size))
    return {k: v for k, v in result.metrics.items() if k.endswith(f"_{task}")}


class BaselineCache:
    """Single-task metrics per (config, task): memory first, then disk, else trained."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.dir = None if cache_dir is None else Path(cache_dir) / "multitask_vision" / "baselines"
        self.memory: dict[str, dict[str, float]] = {}
        self.trained = 0

    def get(self, cfg: MultitaskVisionConfig, data: TaskData, task: str) -> dict[str, float]:
        key = baseline_key(cfg, task)
        if key in self.memory:
            return self.memory[key]
        path = None if self.dir is None else self.dir / f"{key}.json"
        if path is not None and path.is_file():
            try:
                metrics = json.loads(path.read_text())["metrics"]
            except (OSError, ValueError, KeyError):
                metrics = None  # a damaged cache entry is retrained, not trusted
            if isinstance(metrics, dict):
                self.memory[key] = {k: float(v) for k, v in metrics.items()}
                return self.memory[key]
        metrics = train_baseline(cfg, data, task)
        self.trained += 1
        self.memory[key] = metrics
        from moopt.distributed import is_main_process

        if path is not None and is_main_process():  # every rank trained it; one writes
            path.parent.mkdir(parents=True, exist_ok=True)
            # A temp name of its own: two comparisons sharing the cache never write one file.
            write_text_atomic(path, json.dumps({"task": task, "metrics": metrics}, indent=1))
        return metrics
