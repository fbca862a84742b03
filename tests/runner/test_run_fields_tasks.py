"""The three tasks take the run fields: tiny runs with precision bf16-mixed / bf16 and
grad_accum 2 finish with finite metrics, the trained weights have the mode's dtype, and
the frozen reference model of unlearning follows the run's placement."""

from __future__ import annotations

import math

import pytest
import torch

from moopt.runner.run import run_task

pytest.importorskip("transformers", reason="the LLM tasks need moopt[llm]")

COMMON = {"progress": False, "steps": 2, "grad_accum": 2, "device": "cpu", "threads": 1}


def _finite(metrics: dict[str, float]) -> bool:
    return bool(metrics) and all(math.isfinite(v) for v in metrics.values())


def _dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters() if p.is_floating_point()}


WEIGHTS = {"bf16-mixed": torch.float32, "bf16": torch.bfloat16}


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16"])
def test_unlearning(tmp_path, precision):
    from moopt.tasks.unlearning.adapter import UnlearningTask
    from moopt.tasks.unlearning.config import UnlearningConfig

    cfg = UnlearningConfig(n_people=4, n_forget=1, facts_per_person=2, n_utility=4,
                           finetune_epochs=1, max_new_tokens=4, eval_batch_size=16,
                           schedule={"forget": 1, "retain": 1}, precision=precision,
                           out=tmp_path / "run", cache_dir=tmp_path / "cache", **COMMON)
    res = run_task(UnlearningTask(), cfg, plots=False)
    assert res.train.finished and _finite(res.metrics)
    assert _dtypes(res.setup.model) == {WEIGHTS[precision]}
    ref = res.setup.extras["ref_model"]  # npo needs it; placed like the model
    assert _dtypes(ref) == {WEIGHTS[precision]}
    assert not any(p.requires_grad for p in ref.parameters())


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16"])
def test_safety(tmp_path, precision):
    from moopt.tasks.safety.adapter import SafetyTask
    from moopt.tasks.safety.config import SafetyConfig

    cfg = SafetyConfig(pretrain_epochs=1, eval_subset=4, max_new_tokens=4, schedule="joint",
                       precision=precision, out=tmp_path / "run", cache_dir=tmp_path / "cache",
                       **COMMON)
    res = run_task(SafetyTask(), cfg, plots=False)
    assert res.train.finished and _finite(res.metrics)
    assert _dtypes(res.setup.model) == {WEIGHTS[precision]}


@pytest.mark.parametrize("mode", ["alternating", "joint"])
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16"])
def test_multitask_vision(tmp_path, precision, mode):
    pytest.importorskip("torchvision", reason="multi-task vision needs moopt[vision]")
    from moopt.tasks.multitask_vision.adapter import MultitaskVisionTask
    from moopt.tasks.multitask_vision.config import MultitaskVisionConfig

    cfg = MultitaskVisionConfig(n_train=64, n_test=32, batch_size=16, baselines=True,
                                mode=mode, precision=precision, out=tmp_path / "run",
                                cache_dir=tmp_path / "cache", **COMMON)
    res = run_task(MultitaskVisionTask(), cfg, plots=False)
    assert res.train.finished and _finite(res.metrics)
    assert _dtypes(res.setup.model) == {WEIGHTS[precision]}
    assert "single_acc_left" in res.metrics  # the baselines trained with the same fields
    assert "Optimizer state memory" in (tmp_path / "run" / "report.md").read_text()
