"""Presets of the unlearning task (``--preset NAME``), sized for CPUs.

- ``smoke``: the whole pipeline (stage 1 included) on the embedded data in about 20 s of
  CPU (one thread: on a small shared machine more threads only wait for each other), ending
  with answers that read as text: NPO with ``beta = 1`` for 120 steps makes the forget
  questions' true answers about three times less likely and the model answers them with
  other, wrong facts ("Selen was born in Fennick.") instead of the degenerate "in in in"
  that NPO's default ``beta = 0.1`` produced on this tiny model. With ``--data-dir
  .../tofu`` the budget caps the TOFU data (forget01 task 1 cut to 12 forget items, 24
  retain items, 12 items per evaluation set); there the gentle NPO unlearns little (the
  ``tofu`` preset is the one for TOFU).
- ``demo``: ``moopt compare unlearning --preset demo``: shared / decoupled / bridged (fp32)
  and bridged int8 (when an int8 backend is registered), 3 learning rates x 2 seeds on one
  fine-tuned target, with the forget-quality / model-utility trade-off report.
- ``tofu``: needs ``--data-dir`` (refuses to run without it): TOFU forget01 (task 1, 40
  items) with 100 retain items (the retain-evaluation items first) and 40 items per
  utility evaluation set.
- ``paper``: TOFU's protocol on real checkpoints (``--model`` with ``--retain-model`` or
  ``--retain-logs``, ``--data-dir``): nothing capped, the paper's hyperparameters (lr 1e-5,
  5 epochs, batch 4, forget:retain 1:5, weight decay 0.01; gradient accumulation, device
  and precision are run fields given on the command line), sequences up to 512 tokens,
  greedy answers up to 200 new tokens, evaluation batches of 30 as in TOFU.

Calibration (issue 3): a 3.7M-parameter GPT-2 on 760 TOFU pairs padded to 187 tokens took
33 s/epoch; these presets use a 0.12-0.4M-parameter GPT-2 (width 64, 2 layers), a
word-level tokenizer (short sequences) and length-bucketed batches.

Example:
    >>> from moopt.tasks.unlearning.presets import PRESETS
    >>> PRESETS["smoke"]["loss"], PRESETS["smoke"]["schedule"]
    ('npo+gd', {'forget': 1, 'retain': 5})
"""

from __future__ import annotations

from typing import Any

_PAPER_SCHEDULE = {"forget": 1, "retain": 5}

# The settings the demo and tofu presets share (and the smoke preset started from).
_BASE: dict[str, Any] = {
    "loss": "npo+gd",
    "policy": "bridged",
    "schedule": _PAPER_SCHEDULE,
    "lr": 1e-3,
    "lr_ratios": {"forget": 1.0, "retain": 1.0},
    "weight_decay": 0.01,
    "steps": 60,
    "eval_every": 0,
    "batch_size": 8,
    "n_people": 16,
    "n_forget": 2,
    "facts_per_person": 5,
    "n_utility": 12,
    "forget_subset": 12,
    "retain_subset": 24,
    "eval_subset": 12,
    "finetune_epochs": 80.0,
    "finetune_lr": 5e-3,
    "finetune_batch_size": 16,
    "max_length": 64,
    "max_new_tokens": 12,
}

SMOKE: dict[str, Any] = {
    **_BASE,
    "threads": 1,
    "steps": 120,
    "loss_options": {"npo": {"beta": 1.0}},
}

DEMO: dict[str, Any] = {
    **_BASE,
    "steps": 60,
    "n_people": 20,
    "facts_per_person": 6,
    "n_utility": 16,
    "eval_subset": 20,
    "compare": {
        "configs": [["shared", "fp32"], ["decoupled", "fp32"], ["bridged", "fp32"],
                    ["bridged", "int8"]],
        "lrs": [5e-4, 1e-3, 2e-3],
        "seeds": [0, 1],
    },
}

TOFU: dict[str, Any] = {
    **_BASE,
    # Without --data-dir this would train on the embedded toy data and look like TOFU numbers.
    "requires": {"data_dir": "the TOFU folder (forget01.json, retain90.json, ...)"},
    "forget_split": "forget01",
    "task_id": "1",
    "retain_split": "retain90",
    "forget_subset": None,
    "retain_subset": 100,
    "eval_subset": 40,
    "steps": 60,
    "finetune_epochs": 80.0,
    "max_length": 96,
    "max_new_tokens": 24,
    "vocab_size": 6000,
}

PAPER: dict[str, Any] = {
    "requires": {"model": "the fine-tuned target checkpoint (with --retain-model or "
                          "--retain-logs)"},
    "loss": "npo+gd",
    "policy": "bridged",
    "schedule": _PAPER_SCHEDULE,
    "lr": 1e-5,
    "weight_decay": 0.01,
    "epochs": 5.0,
    "batch_size": 4,
    "max_length": 512,
    "max_new_tokens": 200,
    "eval_batch_size": 30,
}

PRESETS: dict[str, dict[str, Any]] = {"smoke": SMOKE, "demo": DEMO, "tofu": TOFU,
                                      "paper": PAPER}
