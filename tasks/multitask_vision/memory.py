"""Optimizer-state memory of the multi-task models, from ``memory_report()``.

``optimizer_memory`` builds the optimizer on a copy of the model and takes one step per
objective, so that every buffer the policy allocates in training exists (state is created
lazily), then reads ``memory_report()``. With ``example`` images, objective k's gradient
comes from a backward pass through head k, so exactly the parameters that objective k
touches in training get its state (the encoder and head k, not the other heads); without,
every parameter gets a zero gradient for every objective. The model itself is never
touched.

Run ``python -m moopt.tasks.multitask_vision.memory`` for the table of N = 2 (MultiMNIST LeNet),
N = 3 (three-task MultiMNIST) and N = 40 (CelebA ResNet-18); ``--no-celeba`` skips the
N = 40 rows (bridged fp32 state of ResNet-18 with 40 objectives needs about 3.7 GB).

Example:
    >>> import torch
    >>> from moopt.tasks.multitask_vision.memory import optimizer_memory
    >>> rep = optimizer_memory(torch.nn.Linear(64, 64), ["a", "b"], "bridged", "fp32")
    >>> rep["bytes_per_param"]  # (2 + 2N) * 4 bytes for N = 2
    24.0
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def optimizer_memory(
    model: nn.Module,
    objectives: Sequence[str],
    policy: str,
    storage: Any,
    example: torch.Tensor | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``memory_report()`` of the optimizer state ``model`` holds after training."""
    from moopt.optimizer import MultiObjectiveOptimizer

    clone = copy.deepcopy(model).eval()  # eval: batch-norm statistics stay put
    params = [p for p in clone.parameters() if p.requires_grad]
    opt = MultiObjectiveOptimizer(params, objectives=list(objectives), policy=policy,
                                  storage=storage, lr=1e-12, **options)
    for name in objectives:
        opt.zero_grad()
        if example is None:
            for p in params:
                p.grad = torch.zeros_like(p)
        else:
            clone(example, tasks=[name])[name].sum().mul(0.0).backward()
        opt.step(objective=name)
    report = opt.memory_report()
    del opt, clone
    return report


def memory_rows(
    policies: Sequence[str] = ("shared", "decoupled", "bridged"),
    storages: Sequence[str] = ("fp32", "int8"),
    celeba: bool = True,
) -> list[dict[str, Any]]:
    """One row per (model, N, policy, storage) with total bytes and bytes per parameter."""
    from moopt.tasks.multitask_vision.celeba import CELEBA_ATTRIBUTES
    from moopt.tasks.multitask_vision.models import lenet_multihead, resnet18_multihead
    from moopt.tasks.multitask_vision.multimnist import VARIANTS

    mnist = torch.zeros(1, 1, 28, 28)
    models = [("MultiMNIST LeNet", lenet_multihead(VARIANTS["multimnist"]), mnist),
              ("MultiMNIST-3 LeNet", lenet_multihead(VARIANTS["multimnist3"]), mnist)]
    if celeba:
        heads = dict.fromkeys(CELEBA_ATTRIBUTES, 2)
        models.append(("CelebA ResNet-18", resnet18_multihead(heads), torch.zeros(1, 3, 64, 64)))
    from moopt.states.storage import list_storages

    known = set(list_storages())
    rows = []
    for label, model, example in models:
        names = list(model.task_names)
        for policy in policies:
            for storage in storages:
                if storage not in known:  # e.g. int8 not registered in this installation
                    rows.append({"model": label, "N": len(names), "policy": policy,
                                 "storage": storage, "params": "-", "state_MiB": "-",
                                 "bytes_per_param": "not registered"})
                    continue
                rep = optimizer_memory(model, names, policy, storage, example)
                rows.append({"model": label, "N": len(names), "policy": policy,
                             "storage": storage, "params": rep["num_params"],
                             "state_MiB": rep["total_bytes"] / 2**20,
                             "bytes_per_param": rep["bytes_per_param"]})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from moopt.runner.report import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-celeba", action="store_true", help="skip the N = 40 rows")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = memory_rows(celeba=not args.no_celeba)
    header = list(rows[0])
    print(markdown_table(header, [[r[h] for h in header] for r in rows]))
    print(f"\n({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
