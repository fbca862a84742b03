"""Models: output shapes per head, task checks, ResNet-18 trunk offline."""

from __future__ import annotations

import pytest
import torch
from moopt.tasks.multitask_vision.errors import TaskMismatchError
from moopt.tasks.multitask_vision.models import lenet_multihead, resnet18_multihead


def test_lenet_heads_and_shared_encoder():
    net = lenet_multihead({"left": 10, "right": 10, "larger": 2})
    out = net(torch.rand(5, 1, 28, 28))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "left": (5, 10), "right": (5, 10), "larger": (5, 2)}
    # A loss on one head reaches the shared encoder and that head only.
    out["left"].sum().backward()
    assert net.encoder.fc.weight.grad is not None
    assert net.heads["right"][0].weight.grad is None
    only = net(torch.rand(2, 1, 28, 28), tasks=["right"])
    assert list(only) == ["right"]


def test_task_mismatch_is_named():
    net = lenet_multihead({"left": 10, "right": 10})
    with pytest.raises(TaskMismatchError, match="'larger'"):
        net(torch.rand(1, 1, 28, 28), tasks=["larger"])
    with pytest.raises(TaskMismatchError, match="2 heads"):
        net.check_objectives(["left", "right", "larger"])
    net.check_objectives(["right", "left"])


def test_resnet18_trunk_with_40_heads():
    torch.manual_seed(0)
    heads = {f"attr{i}": 2 for i in range(40)}
    net = resnet18_multihead(heads)
    out = net(torch.rand(2, 3, 32, 32))
    assert len(out) == 40 and all(v.shape == (2, 2) for v in out.values())
    trunk = sum(p.numel() for p in net.encoder.parameters())
    assert trunk == 11_176_512  # torchvision ResNet-18 without its fc layer
    assert sum(p.numel() for p in net.heads.parameters()) == 40 * (512 * 2 + 2)
