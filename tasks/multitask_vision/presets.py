"""Presets of ``moopt run/compare multitask-vision``.

* ``smoke``: MultiMNIST, 1,200 training composites, 60 steps; seconds on 2 CPU cores (in
  the test suite).
* ``demo``: MultiMNIST, 3 policies x {fp32, int8} x {alternating, joint} x 2 seeds with
  single-task baselines, 600 steps of batch 128 each (``python -m
  tasks.multitask_vision.sweep --preset demo --out DIR`` runs both modes): 24 runs + 4
  baselines, about 17,000 LeNet steps; see docs/tasks/multitask_vision.md for the time
  it took.
* ``demo3``: the three-task variant (left, right, larger), fp32 only, 600 steps.
* ``celeba``: 40 attributes with ResNet-18 (needs ``--data-dir`` with CelebA).
"""

from __future__ import annotations

from typing import Any

POLICIES = ["shared", "decoupled", "bridged"]

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "dataset": "multimnist",
        "n_train": 1200,
        "n_test": 400,
        "batch_size": 64,
        "steps": 60,
        "lr": 2e-3,
        "progress": False,
        "compare": {"policies": POLICIES, "storages": ["fp32"], "seeds": [0]},
    },
    "demo": {
        "dataset": "multimnist",
        "n_train": 20000,
        "n_test": 2000,
        "batch_size": 128,
        "steps": 600,
        "lr": 2e-3,
        "compare": {
            "policies": POLICIES,
            "storages": ["fp32", "int8"],
            "seeds": [0, 1],
            "modes": ["alternating", "joint"],
        },
    },
    "demo3": {
        "dataset": "multimnist3",
        "n_train": 20000,
        "n_test": 2000,
        "batch_size": 128,
        "steps": 600,
        "lr": 2e-3,
        "compare": {
            "policies": POLICIES,
            "storages": ["fp32"],
            "seeds": [0, 1],
            "modes": ["alternating", "joint"],
        },
    },
    "celeba": {
        "dataset": "celeba",
        "batch_size": 64,
        "eval_batch_size": 128,
        "steps": 2000,
        "lr": 1e-3,
        "image_size": 64,
        "max_eval": 5000,
        "compare": {"policies": POLICIES, "storages": ["int8"], "seeds": [0]},
    },
}
