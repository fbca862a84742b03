"""Rank function of the slow test that runs real tasks on 2 gloo ranks with parallel ddp /
fsdp: unlearning (tiny Hugging Face GPT-2 and Llama, generation in the evaluation) and
multi-task vision (LeNet; joint mode shares one forward pass between the objectives)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from moopt.runner.run import run_task
from tests.distributed.harness import write_result


def unlearning_config(out: Path, label: str, **kw: Any):
    from moopt.tasks.unlearning.config import UnlearningConfig

    base = dict(n_people=4, n_forget=1, facts_per_person=2, n_utility=4, finetune_epochs=1,
                max_new_tokens=4, eval_batch_size=16, schedule={"forget": 1, "retain": 1},
                steps=4, batch_size=4, progress=False, device="cpu", out=out / label,
                cache_dir=out / "cache")
    base.update(kw)
    return UnlearningConfig(**base)


def vision_config(out: Path, label: str, **kw: Any):
    from moopt.tasks.multitask_vision.config import MultitaskVisionConfig

    base = dict(n_train=64, n_test=32, batch_size=16, steps=4, baselines=False,
                progress=False, device="cpu", out=out / label, cache_dir=out / "cache")
    base.update(kw)
    return MultitaskVisionConfig(**base)


def run_tasks(rank: int, world: int, out: Path, cases: list[tuple[str, str, dict]]) -> None:
    """Each case: (label, "unlearning" or "vision", overrides); stopped after 2 of 4 steps
    and resumed."""
    from moopt.tasks.multitask_vision.adapter import MultitaskVisionTask
    from moopt.tasks.unlearning.adapter import UnlearningTask

    for label, name, overrides in cases:
        if name == "unlearning":
            task, cfg = UnlearningTask(), unlearning_config(out, label, **overrides)
        else:
            task, cfg = MultitaskVisionTask(), vision_config(out, label, **overrides)
        part = run_task(task, cfg, stop_after=2, plots=False)
        assert part.train.step == 2
        result = run_task(task, cfg, resume=True, plots=False)
        params = [p.detach().full_tensor() if hasattr(p, "full_tensor") else p.detach()
                  for p in result.setup.model.parameters()]
        if rank == 0:
            torch.save(params, out / f"{label}-params.pt")
            (out / f"{label}.json").write_text(json.dumps({
                "step": result.train.step, "metrics": result.metrics,
                "finite": all(math.isfinite(v) for v in result.metrics.values())}))
    write_result(out, rank, {"done": True}, "tasks")
