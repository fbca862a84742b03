"""Presets of ``moopt run/compare multitask-vision``.

* ``smoke``: MultiMNIST, 1,200 training composites, 60 steps; seconds on 2 CPU cores (in
  the test suite).
* ``demo``: MultiMNIST, ``moopt compare multitask-vision --preset demo --out DIR`` runs
  3 policies x {fp32, int8} x {alternating, joint} (the ``mode`` axis) x 2 seeds with
  single-task baselines: 24 runs + 4 baselines of 600 steps of batch 128, one CPU thread
  per run (``threads``; see :func:`moopt.runner.run.cpu_threads`). See
  docs/tasks/multitask_vision.md for the time it took.
* ``demo3``: the three-task variant (left, right, larger), fp32, both modes, 2 seeds.
* ``celeba``: 40 attributes with ResNet-18 (needs ``--data-dir`` with CelebA).
"""

from __future__ import annotations

from typing import Any

POLICIES = ["shared", "decoupled", "bridged"]
MODES = ["alternating", "joint"]

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "dataset": "multimnist",
        "n_train": 1200,
        "n_test": 400,
        "batch_size": 64,
        "steps": 60,
        "lr": 2e-3,
        "threads": 1,
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
        "threads": 1,
        "compare": {
            "policies": POLICIES,
            "storages": ["fp32", "int8"],
            "seeds": [0, 1],
            "axes": {"mode": MODES},
        },
    },
    "demo3": {
        "dataset": "multimnist3",
        "n_train": 20000,
        "n_test": 2000,
        "batch_size": 128,
        "steps": 600,
        "lr": 2e-3,
        "threads": 1,
        "compare": {
            "policies": POLICIES,
            "storages": ["fp32"],
            "seeds": [0, 1],
            "axes": {"mode": MODES},
        },
    },
    "celeba": {
        "requires": {"data_dir": "the CelebA root folder (ROOT/celeba/img_align_celeba/, "
                                 "list_attr_celeba.txt, ...); it is not downloaded"},
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
