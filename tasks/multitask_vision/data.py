"""Train/test data of a run, chosen by the config; cached per process by data key.

Example:
    >>> from moopt.tasks.multitask_vision.config import MultitaskVisionConfig
    >>> from moopt.tasks.multitask_vision.data import load_data
    >>> data = load_data(MultitaskVisionConfig(n_train=32, n_test=16))
    >>> data.task_names, data.num_classes["left"], len(data.train)
    (['left', 'right'], 10, 32)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from moopt.tasks.multitask_vision.config import MultitaskVisionConfig
from moopt.tasks.multitask_vision.dataset import MultiTaskTensorDataset, stack_batches
from moopt.tasks.multitask_vision.errors import DataLayoutError

from moopt.runner.data import BatchStream


@dataclass
class TaskData:
    """The training and evaluation sets of one dataset configuration."""

    train: Any
    test: Any
    num_classes: dict[str, int]
    image_size: int
    channels: int

    @property
    def task_names(self) -> list[str]:
        return list(self.num_classes)

    def stream(self, seed: int, batch_size: int) -> BatchStream:
        """An endless, resumable, seeded stream of training batches ``(x, {task: y})``."""
        if isinstance(self.train, MultiTaskTensorDataset):
            ds = self.train
            # Index batches then gather: much faster than stacking items one by one.
            collate: Callable = lambda idx: ds.batch(torch.tensor(idx))  # noqa: E731
            return BatchStream(
                range(len(ds)),
                seed=seed,
                batch_size=batch_size,
                collate=collate,
                drop_last=len(ds) >= batch_size,
            )
        return BatchStream(self.train, seed=seed, batch_size=batch_size, collate=stack_batches)


def data_key(cfg: MultitaskVisionConfig) -> tuple:
    """What identifies the data of a run (run seed, policy... do not change it)."""
    tasks = tuple(cfg.tasks) if cfg.tasks is not None else None
    return (
        cfg.dataset,
        str(cfg.data_dir),
        cfg.n_train,
        cfg.n_test,
        cfg.max_eval,
        cfg.data_seed,
        tasks,
        cfg.image_size,
    )


_CACHE: dict[tuple, TaskData] = {}


def load_data(cfg: MultitaskVisionConfig) -> TaskData:
    """Build (or reuse) the data of ``cfg``; raises clear errors for bad roots or tasks."""
    key = data_key(cfg)
    if key not in _CACHE:
        if len(_CACHE) >= 4:  # a comparison uses one key; do not hold many datasets
            _CACHE.clear()
        _CACHE[key] = _build(cfg)
    return _CACHE[key]


def _build(cfg: MultitaskVisionConfig) -> TaskData:
    if cfg.dataset == "celeba":
        from moopt.tasks.multitask_vision.celeba import load_celeba

        if cfg.data_dir is None:
            raise DataLayoutError(
                "dataset 'celeba' needs --data-dir ROOT holding ROOT/celeba/ in torchvision's "
                "layout; it is never downloaded at run time"
            )
        size = cfg.image_size or 64
        train = load_celeba(cfg.data_dir, "train", tasks=cfg.tasks, image_size=size)
        test = load_celeba(cfg.data_dir, "test", tasks=cfg.tasks, image_size=size)
        if cfg.max_eval is not None and len(test) > cfg.max_eval:
            test = torch.utils.data.Subset(test, range(cfg.max_eval))
        return TaskData(train, test, dict(train.num_classes), size, 3)
    from moopt.tasks.multitask_vision.multimnist import build_multimnist

    size = cfg.image_size or 28
    train, test = build_multimnist(
        cfg.dataset,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        seed=cfg.data_seed,
        data_dir=cfg.data_dir,
        tasks=cfg.tasks,
        image_size=size,
    )
    return TaskData(train, test, dict(train.num_classes), size, 1)
