"""An in-memory multi-task dataset: one image tensor, one label tensor per task.

Example:
    >>> import torch
    >>> from moopt.tasks.multitask_vision.dataset import MultiTaskTensorDataset
    >>> ds = MultiTaskTensorDataset(torch.zeros(4, 1, 8, 8),
    ...                             {"a": torch.tensor([0, 1, 2, 3])}, {"a": 4})
    >>> image, labels = ds[2]
    >>> tuple(image.shape), int(labels["a"])
    ((1, 8, 8), 2)
    >>> ds.select_tasks(["a"]).task_names
    ['a']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from moopt.tasks.multitask_vision.errors import UnknownTaskError
from torch import Tensor
from torch.utils.data import Dataset


def check_task_names(requested: Sequence[str], available: Sequence[str], dataset: str) -> None:
    """Raise ``UnknownTaskError`` naming the first requested task the dataset lacks."""
    if len(requested) == 0:
        raise ValueError(f"{dataset}: at least one task is needed, got {list(requested)!r}")
    if len(set(requested)) != len(requested):
        raise ValueError(f"{dataset}: task names repeat in {list(requested)!r}")
    for name in requested:
        if name not in available:
            shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
            raise UnknownTaskError(f"{dataset} has no task {name!r}; its tasks are: {shown}")


class MultiTaskTensorDataset(Dataset):
    """Images ``[n, C, H, W]`` with integer labels per task; items are ``(image, {task: y})``.

    ``num_classes`` maps every task to its number of classes; labels are checked to lie in
    ``[0, num_classes)`` so a bad label fails here, not deep inside a loss.
    """

    def __init__(
        self, images: Tensor, labels: Mapping[str, Tensor], num_classes: Mapping[str, int]
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be [n, C, H, W], got shape {tuple(images.shape)}")
        if set(labels) != set(num_classes):
            raise ValueError(
                f"labels name tasks {sorted(labels)} but num_classes names {sorted(num_classes)}"
            )
        n = images.shape[0]
        for task, y in labels.items():
            if y.shape != (n,):
                raise ValueError(
                    f"labels of task {task!r} have shape {tuple(y.shape)}, want ({n},)"
                )
            if n and (int(y.min()) < 0 or int(y.max()) >= num_classes[task]):
                raise ValueError(
                    f"labels of task {task!r} lie in [{int(y.min())}, {int(y.max())}], "
                    f"outside [0, {num_classes[task]})"
                )
        self.images = images
        self.labels = {task: y.long() for task, y in labels.items()}
        self.num_classes = dict(num_classes)

    @property
    def task_names(self) -> list[str]:
        return list(self.labels)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        return self.images[index], {task: y[index] for task, y in self.labels.items()}

    def select_tasks(self, names: Sequence[str]) -> MultiTaskTensorDataset:
        """The same images with only the named tasks (in the given order)."""
        check_task_names(names, self.task_names, type(self).__name__)
        return MultiTaskTensorDataset(
            self.images,
            {n: self.labels[n] for n in names},
            {n: self.num_classes[n] for n in names},
        )

    def batch(self, indices: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Gather a batch by index tensor (faster than a DataLoader for in-memory data)."""
        return self.images[indices], {task: y[indices] for task, y in self.labels.items()}


def stack_batches(items: Sequence[tuple[Tensor, Mapping[str, Tensor]]]) -> tuple[Tensor, dict]:
    """Collate ``(image, {task: y})`` items into ``(images, {task: labels})``."""
    images = torch.stack([x for x, _ in items])
    tasks = list(items[0][1])
    return images, {t: torch.stack([torch.as_tensor(y[t]) for _, y in items]) for t in tasks}
