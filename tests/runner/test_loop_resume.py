"""The training loop: resumption identity, joint mode, history, errors."""

from __future__ import annotations

import json

import pytest
import torch

from moopt.runner import RunConfig, TrainingSetup, TrainObjective
from moopt.runner.config import ConfigError
from moopt.runner.loop import TrainingError, train
from moopt.runner.run import run_task
from tests.runner.toy_task import ToyConfig, ToyTask


def _cfg(tmp_path, name, **kw):
    base = dict(steps=12, lr=0.05, schedule={"a": 1, "b": 2}, eval_every=4, progress=False,
                cache_dir=tmp_path / "cache", out=tmp_path / name, policy="bridged")
    base.update(kw)
    return ToyConfig(**base)


def _params(result):
    return [p.detach().clone() for p in result.setup.model.parameters()]


@pytest.mark.parametrize("schedule", [{"a": 1, "b": 2}, "joint"])
def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, schedule):
    k = 6
    full = run_task(ToyTask(), _cfg(tmp_path, "full", schedule=schedule), plots=False)
    part = run_task(ToyTask(), _cfg(tmp_path, "split", schedule=schedule), stop_after=k,
                    plots=False)
    assert part.train.step == k and not part.train.finished
    assert not (tmp_path / "split" / "metrics.json").exists()  # unfinished: no results yet
    # The parameters after k steps differ from the final ones (the test is not vacuous).
    assert any(not torch.equal(a, b) for a, b in zip(_params(part), _params(full)))
    rest = run_task(ToyTask(), _cfg(tmp_path, "split", schedule=schedule), resume=True,
                    plots=False)
    assert rest.train.step == 12
    for a, b in zip(_params(rest), _params(full)):
        assert torch.equal(a, b)
    assert rest.metrics == full.metrics
    opt_a, opt_b = rest.train.optimizer.state_dict(), full.train.optimizer.state_dict()
    for pa, pb in zip(opt_a["state"].values(), opt_b["state"].values()):
        for key, va in pa.items():
            assert torch.equal(torch.as_tensor(va), torch.as_tensor(pb[key])), key
    def history(name):
        lines = (tmp_path / name / "history.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines]

    assert history("split") == history("full")  # no duplicated or missing records after resumption


def test_history_has_losses_and_periodic_evals(tmp_path):
    res = run_task(ToyTask(), _cfg(tmp_path, "h"), plots=False)
    evals = res.train.history.evals()
    assert [s for s, _ in evals] == [4, 8, 12]
    losses = res.train.history.losses()
    # schedule a:1, b:2 over 12 steps: a at steps 1, 4, 7, 10
    assert [s for s, _ in losses["a"]] == [1, 4, 7, 10]
    assert len(losses["b"]) == 8
    metrics = json.loads((tmp_path / "h" / "metrics.json").read_text())
    assert metrics["mse_a"] == evals[-1][1]["mse_a"]
    assert metrics["time_train_s"] > 0


def test_training_reduces_the_losses(tmp_path):
    untrained = run_task(ToyTask(), _cfg(tmp_path, "u", steps=1, lr=1e-6, out=None))
    trained = run_task(ToyTask(), _cfg(tmp_path, "t", steps=150, eval_every=0, out=None))
    for key in ("mse_a", "mse_b"):
        assert trained.metrics[key] < 0.7 * untrained.metrics[key]


def test_non_finite_loss_names_objective_and_step():
    w = torch.nn.Parameter(torch.ones(1))
    setup = TrainingSetup(torch.nn.Linear(1, 1), {
        "ok": TrainObjective(lambda: w.pow(2).sum()),
        "bad": TrainObjective(lambda: w.sum() * float("nan")),
    }, params=[w])
    with pytest.raises(TrainingError, match=r"'bad' gave a non-finite loss nan at step 2"):
        train(setup, RunConfig(steps=4, progress=False))


def test_config_errors_about_objectives():
    w = torch.nn.Parameter(torch.ones(1))
    setup = TrainingSetup(torch.nn.Linear(1, 1), {"a": TrainObjective(lambda: w.sum())},
                          params=[w])
    with pytest.raises(ConfigError, match=r"'lr_ratios' names unknown objective\(s\) \['forgt'\]"):
        train(setup, RunConfig(steps=1, lr_ratios={"forgt": 2.0}, progress=False))
    with pytest.raises(ConfigError, match=r"'schedule'.*missing: \['a'\]"):
        train(setup, RunConfig(steps=1, schedule={"b": 1}, progress=False))
    with pytest.raises(ConfigError, match="'epochs'.*steps_per_epoch"):
        train(setup, RunConfig(epochs=1, progress=False))


def test_epochs_use_steps_per_epoch(tmp_path):
    res = run_task(ToyTask(), _cfg(tmp_path, "e", steps=None, epochs=1.5, out=None))
    assert res.train.step == 9  # 1.5 epochs x 6 batches
