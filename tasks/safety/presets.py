"""Presets of the safety task (``--preset NAME``), sized for 2 CPU cores.

- ``smoke``: stage 1 (tiny GPT-2 pre-trained on the utility data) and a short stage 2, on
  the embedded data in well under 2 minutes; with ``--data-dir`` the same budget caps the
  real sets (200 harmful training items, 25 prompts per evaluation set).
- ``demo``: ``moopt compare safety --preset demo``: the three objectives (``safety``,
  ``utility``, ``no_overrefusal``) under shared / decoupled / bridged, each in fp32 and int8
  (int8 skipped when not registered), 2 learning rates x 8 seeds on one starting model,
  with the refusal / over-refusal / utility claims against shared fp32 (96 runs, one CPU
  thread).

Example:
    >>> from moopt.tasks.safety.presets import PRESETS
    >>> PRESETS["smoke"]["policy"], len(PRESETS["demo"]["compare"]["seeds"])
    ('bridged', 8)
"""

from __future__ import annotations

from typing import Any

SMOKE: dict[str, Any] = {
    "policy": "bridged",
    "lr": 3e-3,
    "weight_decay": 0.0,
    "steps": 120,
    "eval_every": 0,
    "batch_size": 8,
    "train_subset": 200,
    "eval_subset": 25,
    "pretrain_epochs": 30.0,
    "pretrain_lr": 3e-3,
    "pretrain_batch_size": 16,
    "max_length": 64,
    "max_new_tokens": 16,
}

DEMO: dict[str, Any] = {
    **SMOKE,
    "no_overrefusal": True,
    "eval_subset": 60,
    "threads": 1,
    "compare": {
        "configs": [["shared", "fp32"], ["decoupled", "fp32"], ["bridged", "fp32"],
                    ["shared", "int8"], ["decoupled", "int8"], ["bridged", "int8"]],
        "baseline": ["shared", "fp32"],
        "lrs": [1e-3, 3e-3],
        "seeds": [0, 1, 2, 3, 4, 5, 6, 7],
    },
}

PRESETS: dict[str, dict[str, Any]] = {"smoke": SMOKE, "demo": DEMO}
