"""Presets of the safety task (``--preset NAME``), sized for 2 CPU cores.

- ``smoke``: stage 1 (tiny GPT-2 pre-trained on the utility data) and stage 2 with the three
  objectives (``--no-overrefusal`` on) on the embedded data, in about 15 s of CPU (one
  thread), ending with the trade-off the task is about: held-out harmful prompts refused
  (refusal rate 1.0 measured) and safe-but-scary ones answered (over-refusal 0.1), in whole
  sentences ("I cannot help you with that. It is dangerous and against the law."). Without
  the third objective the model refused everything that sounded dangerous. With
  ``--data-dir`` the same budget caps the real sets (200 harmful training items, 25 prompts
  per evaluation set; refusal 0.86, over-refusal 0.24 measured).
- ``demo``: ``moopt compare safety --preset demo``: the three objectives (``safety``,
  ``utility``, ``no_overrefusal``) under shared / decoupled / bridged, each in fp32 and int8
  (int8 skipped when not registered), 2 learning rates x 2 seeds on one starting model,
  with the refusal / over-refusal / utility trade-off report (24 runs).

Example:
    >>> from moopt.tasks.safety.presets import PRESETS
    >>> PRESETS["smoke"]["policy"], PRESETS["demo"]["compare"]["seeds"]
    ('bridged', [0, 1])
"""

from __future__ import annotations

from typing import Any

# The settings the demo preset shares (and the smoke preset started from).
_BASE: dict[str, Any] = {
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

SMOKE: dict[str, Any] = {
    **_BASE,
    "threads": 1,
    "no_overrefusal": True,
    "steps": 360,
    "lr": 1e-3,
    "max_new_tokens": 24,  # the longest refusal is 21 tokens
}

DEMO: dict[str, Any] = {
    **_BASE,
    "no_overrefusal": True,
    "eval_subset": 60,
    "compare": {
        "configs": [["shared", "fp32"], ["decoupled", "fp32"], ["bridged", "fp32"],
                    ["shared", "int8"], ["decoupled", "int8"], ["bridged", "int8"]],
        "lrs": [1e-3, 3e-3],
        "seeds": [0, 1],
    },
}

PRESETS: dict[str, dict[str, Any]] = {"smoke": SMOKE, "demo": DEMO}
