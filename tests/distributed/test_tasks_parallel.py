"""Real tasks on 2 gloo ranks with parallel ddp / fsdp, stopped and resumed (slow).

Unlearning (tiny GPT-2 / Llama from Hugging Face; ddp with gradient checkpointing and
gradient accumulation, fsdp joint in bf16-mixed): the runs finish and resume with finite
metrics (dropout draws differ per rank, so no comparison with one process). Multi-task
vision (LeNet, no dropout, float32): the 2-rank runs equal one process to float32
rounding, in joint mode too, where both objectives share one forward pass.
"""

from __future__ import annotations

import json

import pytest
import torch

from moopt.runner.run import run_task
from tests.distributed import task_workers as workers
from tests.distributed.harness import run_ranks_to_marker

pytestmark = [pytest.mark.distributed, pytest.mark.slow,
              pytest.mark.skipif(not torch.distributed.is_available()
                                 or not torch.distributed.is_gloo_available(),
                                 reason="torch.distributed with gloo is not available")]
pytest.importorskip("transformers", reason="the unlearning task needs moopt[llm]")
pytest.importorskip("torchvision", reason="multi-task vision needs moopt[vision]")

CASES = [
    ("unlearning-fsdp-gpt2", "unlearning", {"parallel": "fsdp"}),
    ("unlearning-ddp-llama-ckpt", "unlearning", {"parallel": "ddp", "arch": "llama",
                                                 "gradient_checkpointing": True,
                                                 "grad_accum": 2}),
    ("unlearning-fsdp-llama-joint", "unlearning", {"parallel": "fsdp", "arch": "llama",
                                                   "schedule": "joint",
                                                   "precision": "bf16-mixed"}),
    ("vision-ddp-joint", "vision", {"parallel": "ddp", "mode": "joint", "grad_accum": 2,
                                    "policy": "decoupled"}),
    ("vision-fsdp-joint", "vision", {"parallel": "fsdp", "mode": "joint",
                                     "policy": "decoupled"}),
    ("vision-ddp-alternating", "vision", {"parallel": "ddp", "policy": "decoupled"}),
    ("vision-fsdp-alternating", "vision", {"parallel": "fsdp", "grad_accum": 2,
                                           "policy": "decoupled"}),
]
F32_REL = 2e-5


def test_tasks_on_two_ranks(tmp_path):
    from moopt.tasks.multitask_vision.adapter import MultitaskVisionTask

    run_ranks_to_marker(workers.run_tasks, tmp_path, "tasks", CASES, timeout_s=900)
    for label, name, overrides in CASES:
        result = json.loads((tmp_path / f"{label}.json").read_text())
        assert result["step"] == 4 and result["finite"], label
        run = json.loads((tmp_path / label / "run.json").read_text())
        assert run["status"] == "finished" and run["hardware"]["world_size"] == 2, label
        if name != "vision":
            continue
        single = {k: v for k, v in overrides.items() if k != "parallel"}
        ref = run_task(MultitaskVisionTask(),
                       workers.vision_config(tmp_path, f"single-{label}", **single), plots=False)
        got = torch.load(tmp_path / f"{label}-params.pt")
        want = [p.detach() for p in ref.setup.model.parameters()]
        start = [p.detach() for p in run_task(
            MultitaskVisionTask(), workers.vision_config(tmp_path, f"start-{label}",
                                                         **{**single, "steps": 1}),
            plots=False).setup.model.parameters()]
        dev = max(float((a - b).abs().max()) for a, b in zip(got, want, strict=True))
        moved = max(float((a - b).abs().max()) for a, b in zip(start, want))
        scale = max(float(b.abs().max()) for b in want)
        assert dev / scale <= F32_REL, f"{label}: {dev / scale:.2e}"
        assert moved > 100 * dev, label  # training moved the weights far more than that
