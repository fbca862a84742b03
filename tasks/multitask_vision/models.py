"""Hard-parameter-sharing models: one shared encoder, one classification head per task.

* :func:`lenet_multihead` -- the LeNet-style encoder used for MultiMNIST in the multi-task
  literature (two 5x5 conv layers, max-pool, a 50-unit feature layer) with an MLP head per
  task.
* :func:`resnet18_multihead` -- torchvision's ResNet-18 trunk (``weights=None``: random
  init, nothing downloaded) with a linear head per task, for CelebA's 40 attributes.

Every model maps images to ``{task: logits}``; binary tasks use two logits so that every
task trains with the same cross-entropy loss.

Example:
    >>> import torch
    >>> from moopt.tasks.multitask_vision.models import lenet_multihead
    >>> net = lenet_multihead({"left": 10, "right": 10})
    >>> out = net(torch.zeros(3, 1, 28, 28))
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'left': (3, 10), 'right': (3, 10)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from moopt.tasks.multitask_vision.errors import TaskMismatchError, missing_vision_extra
from torch import Tensor, nn


class MultiHeadNet(nn.Module):
    """``encoder`` (images -> features ``[n, d]``) followed by one head per task."""

    def __init__(self, encoder: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("MultiHeadNet needs at least one head, got none")
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))

    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def forward(self, images: Tensor, tasks: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Logits of every task (or only of ``tasks``: a step on one task skips the others)."""
        features = self.encoder(images)
        names = self.task_names if tasks is None else list(tasks)
        for name in names:
            if name not in self.heads:
                raise TaskMismatchError(
                    f"the model has no head for task {name!r}; its heads: {self.task_names}"
                )
        return {name: self.heads[name](features) for name in names}

    def check_objectives(self, objectives: Sequence[str]) -> None:
        """Raise ``TaskMismatchError`` unless the heads are exactly ``objectives``."""
        if len(objectives) != len(self.heads) or set(objectives) != set(self.heads):
            raise TaskMismatchError(
                f"the model has {len(self.heads)} heads {self.task_names} but "
                f"{len(objectives)} objectives {list(objectives)} were given"
            )


class LeNetEncoder(nn.Module):
    """Two conv + max-pool blocks and a ``features``-unit layer; any square input >= 16."""

    def __init__(self, in_channels: int = 1, features: int = 50, image_size: int = 28) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 10, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNetEncoder needs images of side >= 16, got {image_size}")
        self.fc = nn.Linear(20 * side * side, features)
        self.out_features = features

    def forward(self, images: Tensor) -> Tensor:
        return torch.relu(self.fc(self.body(images)))


def lenet_multihead(
    num_classes: Mapping[str, int], *, image_size: int = 28, hidden: int = 50
) -> MultiHeadNet:
    """LeNet encoder with a ``hidden -> hidden -> classes`` MLP head per task."""
    encoder = LeNetEncoder(1, hidden, image_size)
    heads = {
        task: nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, k))
        for task, k in num_classes.items()
    }
    return MultiHeadNet(encoder, heads)


def resnet18_multihead(num_classes: Mapping[str, int], *, in_channels: int = 3) -> MultiHeadNet:
    """torchvision ResNet-18 (random init, no download) with a linear head per task."""
    try:
        from torchvision.models import resnet18
    except ImportError as err:
        raise missing_vision_extra("torchvision") from err
    trunk = resnet18(weights=None)
    if in_channels != 3:
        trunk.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    width = trunk.fc.in_features
    trunk.fc = nn.Identity()
    heads = {task: nn.Linear(width, k) for task, k in num_classes.items()}
    return MultiHeadNet(trunk, heads)
