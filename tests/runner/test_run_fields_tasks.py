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


def tiny_task(name: str, tmp_path, **kw):
    """(task, config) of a tiny run of the task ``name`` (seconds on a CPU)."""
    base = {"out": tmp_path / "run", "cache_dir": tmp_path / "cache", **COMMON, **kw}
    if name == "unlearning":
        from moopt.tasks.unlearning.adapter import UnlearningTask
        from moopt.tasks.unlearning.config import UnlearningConfig

        return UnlearningTask(), UnlearningConfig(
            n_people=4, n_forget=1, facts_per_person=2, n_utility=4, finetune_epochs=1,
            max_new_tokens=4, eval_batch_size=16, **{"schedule": {"forget": 1, "retain": 1},
                                                     **base})
    if name == "safety":
        from moopt.tasks.safety.adapter import SafetyTask
        from moopt.tasks.safety.config import SafetyConfig

        return SafetyTask(), SafetyConfig(pretrain_epochs=1, eval_subset=4, max_new_tokens=4,
                                          **{"schedule": "joint", **base})
    pytest.importorskip("torchvision", reason="multi-task vision needs moopt[vision]")
    from moopt.tasks.multitask_vision.adapter import MultitaskVisionTask
    from moopt.tasks.multitask_vision.config import MultitaskVisionConfig

    return MultitaskVisionTask(), MultitaskVisionConfig(
        n_train=64, n_test=32, batch_size=16, **{"baselines": True, **base})


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16"])
def test_unlearning(tmp_path, precision):
    task, cfg = tiny_task("unlearning", tmp_path, precision=precision)
    res = run_task(task, cfg, plots=False)
    assert res.train.finished and _finite(res.metrics)
    assert _dtypes(res.setup.model) == {WEIGHTS[precision]}
    ref = res.setup.extras["ref_model"]  # npo needs it; placed like the model
    assert _dtypes(ref) == {WEIGHTS[precision]}
    assert not any(p.requires_grad for p in ref.parameters())


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16"])
def test_safety(tmp_path, precision):
    task, cfg = tiny_task("safety", tmp_path, precision=precision)
    res = run_task(task, cfg, plots=False)
    assert res.train.finished and _finite(res.metrics)
    assert _dtypes(res.setup.model) == {WEIGHTS[precision]}


@pytest.mark.parametrize("mode", ["alternating", "joint"])
@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16"])
def test_multitask_vision(tmp_path, precision, mode):
    task, cfg = tiny_task("multitask-vision", tmp_path, precision=precision, mode=mode)
    res = run_task(task, cfg, plots=False)
    assert res.train.finished and _finite(res.metrics)
    assert _dtypes(res.setup.model) == {WEIGHTS[precision]}
    assert "single_acc_left" in res.metrics  # the baselines trained with the same fields
    assert "Optimizer state memory" in (tmp_path / "run" / "report.md").read_text()


def test_gradient_checkpointing_recomputes_and_changes_nothing(tmp_path):
    """A Hugging Face model (tiny Llama) with gradient_checkpointing: the inside of every
    block runs twice per training pass (once more in backward), and the run ends with the
    same bits as without it."""
    from moopt.tasks.unlearning.adapter import UnlearningTask

    class Counted(UnlearningTask):
        calls = 0

        def build(self, cfg, ctx):
            setup = super().build(cfg, ctx)
            names = set(setup.model._no_split_modules)
            block = next(m for m in setup.model.modules() if type(m).__name__ in names)
            inner = next(block.children())  # runs inside the block's (checkpointed) forward

            def count(module, args):
                if torch.is_grad_enabled():
                    type(self).calls += 1

            inner.register_forward_pre_hook(count)
            return setup

    runs = {}
    for gc in (False, True):
        task = type(f"Counted{gc}", (Counted,), {})()
        _, cfg = tiny_task("unlearning", tmp_path / f"gc{gc}", arch="llama",
                           gradient_checkpointing=gc)
        runs[gc] = (run_task(task, cfg, plots=False), type(task).calls)
    (plain, plain_calls), (ckpt, ckpt_calls) = runs[False], runs[True]
    assert plain_calls > 0 and ckpt_calls == 2 * plain_calls
    assert ckpt.setup.model.config.use_cache is False
    for a, b in zip(ckpt.setup.model.parameters(), plain.setup.model.parameters(),
                    strict=True):
        assert torch.equal(a, b)
    assert ckpt.metrics == plain.metrics
