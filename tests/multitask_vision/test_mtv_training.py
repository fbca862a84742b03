"""Training through the runner's loop: every policy x storage x mode, baselines, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from moopt.tasks.multitask_vision.adapter import MultitaskVisionTask
from moopt.tasks.multitask_vision.baselines import BaselineCache, baseline_config
from moopt.tasks.multitask_vision.config import MultitaskVisionConfig
from moopt.tasks.multitask_vision.data import load_data
from moopt.tasks.multitask_vision.errors import TaskMismatchError, UnknownTaskError
from moopt.tasks.multitask_vision.setup import make_setup

from moopt.runner.config import ConfigError, validate_config
from moopt.runner.loop import train
from moopt.runner.task import RunContext
from moopt.states.policy import list_policies
from moopt.states.storage import list_storages

TINY = {"n_train": 64, "n_test": 32, "batch_size": 64, "progress": False, "baselines": False}


def full_batch_losses(setup, data) -> dict[str, float]:
    """Each task's loss on the whole (tiny) training set, without touching anything."""
    images, labels = data.train.batch(torch.arange(len(data.train)))
    with torch.no_grad():
        out = setup.model(images)
    return {t: float(F.cross_entropy(out[t], labels[t])) for t in out}


# Every policy x storage x mode on two tasks; every policy x mode on three (fp32).
GRID = [("multimnist", p, s, m) for p in ("shared", "decoupled", "bridged")
        for s in list_storages() for m in ("alternating", "joint")]
GRID += [("multimnist3", p, "fp32", m) for p in ("shared", "decoupled", "bridged")
         for m in ("alternating", "joint")]


@pytest.mark.parametrize("dataset,policy,storage,mode", GRID)
def test_two_steps_lower_every_task_loss(dataset, policy, storage, mode, tmp_path):
    cfg = MultitaskVisionConfig(dataset=dataset, policy=policy, storage=storage, mode=mode,
                                steps=2 if dataset == "multimnist" else 3, lr=1e-3, **TINY)
    task = MultitaskVisionTask()
    ctx = RunContext(run_dir=None, cache_dir=tmp_path)
    torch.manual_seed(0)
    setup = task.build(cfg, ctx)
    data = setup.extras["data"]
    before = full_batch_losses(setup, data)
    result = train(setup, cfg)
    after = full_batch_losses(setup, data)
    assert result.step == cfg.steps
    # Alternating: one step per task (round robin); joint: every step uses every task.
    for name in data.task_names:
        assert after[name] < before[name], (name, before, after)
    assert result.optimizer.policy_name == policy


def test_every_registered_policy_is_covered():
    assert {"shared", "decoupled", "bridged"} <= set(list_policies())


def test_joint_mode_shares_one_forward_pass_without_changing_the_result():
    base = MultitaskVisionConfig(mode="joint", policy="bridged", steps=3, **TINY)
    data = load_data(base)
    params = []
    calls = []
    for share in (True, False):
        torch.manual_seed(0)
        setup = make_setup(base, data)
        setup.extras["forward"].enabled = share
        hook = setup.model.encoder.register_forward_hook(lambda *a, s=share: calls.append(s))
        train(setup, base)
        hook.remove()
        params.append([p.detach().clone() for p in setup.model.parameters()])
    assert calls.count(True) == 3 and calls.count(False) == 6  # 1 vs N passes per step
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_baseline_config_and_cache(tmp_path):
    cfg = MultitaskVisionConfig(policy="bridged", storage="fp32", mode="joint", steps=2,
                                weights={"left": 2.0, "right": 1.0}, **TINY)
    b = baseline_config(cfg, "right")
    assert (b.tasks, b.policy, b.schedule, b.weights, b.steps) == (["right"], "shared", None,
                                                                   None, 2)
    data = load_data(cfg)
    cache = BaselineCache(tmp_path)
    first = cache.get(cfg, data, "right")
    assert set(first) == {"acc_right"} and 0.0 <= first["acc_right"] <= 1.0
    assert cache.trained == 1
    # Another policy/mode reuses it (memory), a new cache object reads it back from disk.
    other = cfg.model_copy(update={"policy": "shared"})
    assert cache.get(other, data, "right") == first and cache.trained == 1
    fresh = BaselineCache(tmp_path)
    assert fresh.get(cfg, data, "right") == first and fresh.trained == 0
    # A different seed is a different baseline.
    fresh.get(cfg.model_copy(update={"seed": 1}), data, "right")
    assert fresh.trained == 1


def test_evaluate_reports_delta_m_consistent_with_accuracies(tmp_path):
    cfg = MultitaskVisionConfig(steps=2, **{**TINY, "baselines": True})
    task = MultitaskVisionTask()
    ctx = RunContext(run_dir=None, cache_dir=tmp_path)
    ctx.prepared = task.prepare(cfg, ctx)
    setup = task.build(cfg, ctx)
    result = train(setup, cfg, evaluate=lambda: task.evaluate(setup, cfg, ctx))
    m = result.metrics
    expect = -((m["acc_left"] - m["single_acc_left"]) / m["single_acc_left"]
               + (m["acc_right"] - m["single_acc_right"]) / m["single_acc_right"]) / 2 * 100
    assert m["delta_m"] == pytest.approx(expect)
    assert m["acc_mean"] == pytest.approx((m["acc_left"] + m["acc_right"]) / 2)
    assert m["seconds_per_epoch"] > 0


@pytest.mark.parametrize("mode", ["alternating", "joint"])
def test_runs_are_deterministic_by_seed_with_one_thread(mode, tmp_path):
    from moopt.runner.run import run_task

    threads = torch.get_num_threads()
    cfg = MultitaskVisionConfig(steps=4, mode=mode, policy="bridged", threads=1,
                                cache_dir=tmp_path, **{**TINY, "n_train": 256,
                                                       "baselines": True})
    runs = [run_task(MultitaskVisionTask(), c) for c in (cfg, cfg, cfg.model_copy(
        update={"seed": 1}))]
    assert torch.get_num_threads() == threads  # the run's setting is undone afterwards
    weights = [torch.cat([p.detach().flatten() for p in r.setup.model.parameters()])
               for r in runs]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    drop = {"seconds_per_epoch"}
    assert {k: v for k, v in runs[0].metrics.items() if k not in drop} == {
        k: v for k, v in runs[1].metrics.items() if k not in drop}


def test_unknown_task_name_is_named(tmp_path):
    cfg = MultitaskVisionConfig(tasks=["left", "middle"], steps=1, **TINY)
    with pytest.raises(UnknownTaskError, match="'middle'"):
        MultitaskVisionTask().build(cfg, RunContext(run_dir=None, cache_dir=tmp_path))


def test_checkpoint_with_other_heads_is_a_task_mismatch(tmp_path):
    cfg3 = MultitaskVisionConfig(dataset="multimnist3", steps=1, **TINY)
    setup3 = make_setup(cfg3, load_data(cfg3))
    path = tmp_path / "three_heads.pt"
    torch.save(setup3.model.state_dict(), path)
    cfg2 = MultitaskVisionConfig(model=path, steps=1, **TINY)
    with pytest.raises(TaskMismatchError, match=r"3 heads .*2 tasks"):
        make_setup(cfg2, load_data(cfg2))
    # The matching checkpoint loads.
    same = MultitaskVisionConfig(dataset="multimnist3", model=path, steps=1, **TINY)
    loaded = make_setup(same, load_data(same))
    torch.testing.assert_close(loaded.model.state_dict(), setup3.model.state_dict())


def test_a_runner_checkpoint_loads_as_the_starting_model(tmp_path):
    from moopt.runner import checkpoint as ckpt

    cfg = MultitaskVisionConfig(steps=1, **TINY)
    setup = make_setup(cfg, load_data(cfg))
    # What the runner writes: the model beside numpy's RNG state (weights_only alone
    # refuses numpy arrays).
    ckpt.save_checkpoint(tmp_path / "run", {"step": 1, "model": setup.model.state_dict(),
                                            "rng": ckpt.capture_rng()}, step=1)
    path = tmp_path / "run" / ckpt.read_manifest(tmp_path / "run")["folder"] / "state.pt"
    again = MultitaskVisionConfig(model=path, steps=1, **TINY)
    loaded = make_setup(again, load_data(again))
    torch.testing.assert_close(loaded.model.state_dict(), setup.model.state_dict())


def test_objective_names_that_the_model_lacks_are_rejected():
    cfg = MultitaskVisionConfig(mode="joint", steps=1, weights={"left": 1.0, "larger": 1.0},
                                **TINY)
    setup = make_setup(cfg, load_data(cfg))
    with pytest.raises(ConfigError, match="larger"):
        train(setup, cfg)
    with pytest.raises(TaskMismatchError, match="'larger'"):
        make_setup(cfg, load_data(cfg), tasks=["left", "larger"])


def test_mode_and_schedule_conflict_is_named():
    with pytest.raises(ConfigError, match="conflicts"):
        validate_config(MultitaskVisionConfig, {"mode": "joint", "schedule": "round_robin"})
    cfg = validate_config(MultitaskVisionConfig, {"schedule": {"left": 2, "right": 1}})
    assert cfg.mode == "alternating" and not cfg.joint


def test_celeba_fixture_trains_40_objectives_end_to_end(celeba_root, tmp_path):
    root, _ = celeba_root
    cfg = MultitaskVisionConfig(dataset="celeba", data_dir=root, image_size=32, batch_size=4,
                                steps=2, policy="shared", progress=False, baselines=False)
    task = MultitaskVisionTask()
    ctx = RunContext(run_dir=None, cache_dir=tmp_path)
    setup = task.build(cfg, ctx)
    assert len(setup.objectives) == 40 and len(setup.model.heads) == 40
    result = train(setup, cfg, evaluate=lambda: task.evaluate(setup, cfg, ctx))
    m = result.metrics
    assert 0.0 <= m["f1_mean"] <= 1.0 and 0.0 <= m["acc_mean"] <= 1.0
    assert sum(k.startswith("f1_") and k != "f1_mean" for k in m) == 40
    assert m["f1_mean"] == pytest.approx(
        sum(v for k, v in m.items() if k.startswith("f1_") and k != "f1_mean") / 40)
