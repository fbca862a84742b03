"""Run configuration of the multi-task vision task (fields beyond the runner's RunConfig).

``mode`` is a shorthand for the runner's ``schedule``: ``joint`` sets ``schedule="joint"``
(all task losses per batch, one step, weights from ``weights``); ``alternating`` keeps
``schedule`` (default round robin over tasks, or ``{"left": 2, "right": 1}`` frequencies).

Example:
    >>> from moopt.tasks.multitask_vision.config import MultitaskVisionConfig
    >>> cfg = MultitaskVisionConfig(mode="joint")
    >>> cfg.schedule, cfg.dataset
    ('joint', 'multimnist')
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from moopt.runner.config import RunConfig


class MultitaskVisionConfig(RunConfig):
    """Adds the dataset, its size, batch size, mode and the single-task baselines."""

    dataset: Literal["multimnist", "multimnist3", "celeba"] = Field(
        "multimnist", description="the data set (celeba needs --data-dir)")
    mode: Literal["alternating", "joint"] = Field(
        "alternating", description="one task's loss per step, or every task's each step")
    tasks: list[str] | None = Field(None, description="subset of the dataset's tasks")
    batch_size: int = Field(128, gt=0, description="training batch size")
    eval_batch_size: int = Field(500, gt=0, description="evaluation batch size")
    n_train: int = Field(6000, gt=1, description="MultiMNIST training composites")
    n_test: int = Field(2000, gt=0, description="MultiMNIST test composites")
    max_eval: int | None = Field(None, gt=0, description="cap on evaluated CelebA images")
    data_seed: int = Field(0, ge=0, description="seed of the data (fixed across run seeds)")
    image_size: int | None = Field(None, gt=15, description="28 (MultiMNIST) / 64 (CelebA)")
    baselines: bool = Field(True, description="train single-task baselines for delta_m")

    @model_validator(mode="before")
    @classmethod
    def _mode_sets_schedule(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mode, schedule = data.get("mode"), data.get("schedule")
        if mode == "joint":
            if schedule not in (None, "joint"):
                raise ValueError(f"mode 'joint' conflicts with schedule {schedule!r}")
            data = {**data, "schedule": "joint"}
        elif schedule == "joint":
            if mode == "alternating":
                raise ValueError("mode 'alternating' conflicts with schedule 'joint'")
            data = {**data, "mode": "joint"}
        return data

    @property
    def joint(self) -> bool:
        return self.schedule == "joint"
