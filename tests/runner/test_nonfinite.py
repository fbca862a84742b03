"""NaN and infinity never reach a checkpoint: the run stops naming the step and objective
that produced them; steps skipped with nonfinite='skip' are counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moopt.runner import checkpoint as ckpt
from moopt.runner.loop import TrainingError
from moopt.runner.run import run_task
from tests.runner.toy_task import ToyConfig, ToyTask


class _Gradient(torch.autograd.Function):
    """Identity forward (the loss stays finite); backward hands back ``value`` everywhere."""

    @staticmethod
    def forward(ctx, x, value):
        ctx.value = value
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, ctx.value), None


class BadGradient(ToyTask):
    """Objective ``a``'s ``at``-th step gets the gradient ``value`` with a finite loss."""

    def __init__(self, value: float, at: int) -> None:
        super().__init__()
        self.value, self.at, self.calls = value, at, 0

    def build(self, cfg, ctx):
        setup = super().build(cfg, ctx)
        model, A = setup.model, setup.extras["A"]

        def loss_a(x):
            self.calls += 1
            y = model(x)
            if self.calls == self.at:
                y = _Gradient.apply(y, self.value)
            return (y - x @ A).pow(2).mean()

        setup.objectives["a"].loss = loss_a
        return setup


def _cfg(out: Path, **kw) -> ToyConfig:
    base = dict(steps=12, lr=0.05, schedule={"a": 1, "b": 2}, dropout=0.0, progress=False,
                out=out, cache_dir=out.parent / "cache")
    base.update(kw)
    return ToyConfig(**base)


def _all_finite(out: Path) -> bool:
    state = ckpt.load_checkpoint(out)
    tensors = list(state["model"].values())
    for per_param in state["optimizer"]["state"].values():
        tensors += [v for v in per_param.values()
                    if isinstance(v, torch.Tensor) and v.is_floating_point()]
    return all(bool(t.isfinite().all()) for t in tensors)


def test_an_infinite_gradient_with_a_finite_loss_never_reaches_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    # a steps at 1, 4, 7: its 2nd step (step 4) gets an infinite gradient.
    with pytest.raises(TrainingError) as err:
        run_task(BadGradient(float("inf"), at=2), _cfg(out, checkpoint_every=1), plots=False)
    assert str(err.value).startswith(
        "parameter '1.weight' became NaN or infinite in step 4 (objective a); the run stops "
        "and the checkpoint of step 3 is kept.")
    assert ckpt.checkpoint_step(out) == 3 and _all_finite(out)
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "failed" and "step 4 (objective a)" in status["error"]


def test_non_finite_optimizer_state_is_caught_before_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    # shared policy, gradient 1e30 at step 4: v = g^2 overflows to inf, the update is 0 and
    # the parameters stay finite; the state is checked when step 6 would be saved.
    with pytest.raises(TrainingError, match=(
            r"^optimizer state 'v' of '(1\.weight|1\.bias)' became NaN or infinite in one of "
            r"steps 4-6 \(objectives a, b\); the run stops and the checkpoint of step 3 is "
            r"kept")):
        run_task(BadGradient(1e30, at=2), _cfg(out, policy="shared", checkpoint_every=3),
                 plots=False)
    assert ckpt.checkpoint_step(out) == 3 and _all_finite(out)


def test_skipped_steps_are_counted_in_metrics_history_and_report(tmp_path):
    out = tmp_path / "run"
    res = run_task(BadGradient(float("inf"), at=2),
                   _cfg(out, checkpoint_every=2, optimizer_options={"nonfinite": "skip"}),
                   plots=False)
    assert res.train.finished and res.metrics["skipped_steps"] == 1.0
    assert json.loads((out / "metrics.json").read_text())["skipped_steps"] == 1.0
    assert "| skipped_steps | 1 |" in (out / "report.md").read_text()
    records = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("skipped")] == [4]
    assert _all_finite(out)
    clean = run_task(ToyTask(), _cfg(tmp_path / "clean"), plots=False)
    assert clean.metrics["skipped_steps"] == 0.0


def test_a_non_finite_loss_still_names_its_objective_and_step(tmp_path):
    class NanLoss(ToyTask):
        def build(self, cfg, ctx):
            setup = super().build(cfg, ctx)
            inner = setup.objectives["b"].loss
            setup.objectives["b"].loss = lambda x: inner(x) * float("nan")
            return setup

    with pytest.raises(TrainingError, match=r"objective 'b' gave a non-finite loss nan at step 2"):
        run_task(NanLoss(), _cfg(tmp_path / "run"), plots=False)
