"""The run fields every task shares: grad_accum, precision, device, gradient_checkpointing,
parallel (its single-process checks; the ranks are in tests/distributed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from moopt.runner.config import ConfigError
from moopt.runner.loop import total_steps
from moopt.runner.run import run_task
from tests.runner.regression_task import RegressionConfig, RegressionTask

SCHEDULES = [{"a": 1, "b": 2}, "joint"]


def _run(tmp_path, name, **kw):
    base = dict(steps=6, lr=0.02, policy="bridged", progress=False, out=tmp_path / name,
                cache_dir=tmp_path / "cache", device="cpu", schedule={"a": 1, "b": 2})
    base.update(kw)
    return run_task(RegressionTask(), RegressionConfig(**base), plots=False)


def _params(result) -> list[torch.Tensor]:
    return [p.detach().clone() for p in result.setup.model.parameters()]


def _losses(run_dir) -> list[tuple[int, str, float]]:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return [(r["step"], r["objective"], r["loss"]) for r in map(json.loads, lines)
            if "loss" in r]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=["alternating", "joint"])
def test_accumulated_micro_batches_equal_one_big_batch(tmp_path, schedule):
    """grad_accum=4 with batch 4 takes the steps of grad_accum=1 with batch 16 (float64)."""
    big = _run(tmp_path, "big", batch=16, schedule=schedule)
    acc = _run(tmp_path, "acc", batch=4, grad_accum=4, schedule=schedule)
    small = _run(tmp_path, "small", batch=4, schedule=schedule)
    for a, b, c in zip(_params(acc), _params(big), _params(small)):
        scale = b.abs().max()
        assert float((a - b).abs().max() / scale) < 1e-13
        assert float((c - b).abs().max() / scale) > 1e-3  # batch 4 alone is another run
    for (sa, na, la), (sb, nb, lb) in zip(_losses(tmp_path / "acc"), _losses(tmp_path / "big"),
                                          strict=True):
        assert (sa, na) == (sb, nb) and la == pytest.approx(lb, rel=1e-13)
    assert acc.metrics == pytest.approx(big.metrics, rel=1e-12)


def test_uneven_micro_batches_are_weighted_by_items():
    """10 items in batches of 3, grad_accum 2: the first step's pieces (3 + 3 items) weigh
    1/2 each and give the gradient of the 6 items at once; the epoch's short step (3 + 1
    items) weighs its pieces 3/4 and 1/4."""
    from moopt.runner.accumulation import step_pieces

    task = RegressionTask()
    cfg = RegressionConfig(n_items=10, batch=3)
    setup = task.build(cfg, None)
    stream = setup.objectives["a"].batches
    draws = [next(stream) for _ in range(2)]
    joined = {"x": torch.cat([d["x"] for d in draws]),
              "y": {k: torch.cat([d["y"][k] for d in draws]) for k in ("a", "b")}}
    setup.objectives["a"].loss(joined).backward()
    want = [p.grad.clone() for p in setup.model.parameters()]

    setup2 = task.build(cfg, None)
    spec = setup2.objectives["a"]
    pieces = step_pieces(spec, accum=2, rank=0, world=1)
    assert [p.grad_weight for p in pieces] == [0.5, 0.5]
    for piece in pieces:
        (spec.loss(piece.batch) * piece.grad_weight).backward()
    for p, g in zip(setup2.model.parameters(), want, strict=True):
        assert torch.allclose(p.grad, g, rtol=1e-13, atol=0)
    pieces = step_pieces(spec, accum=2, rank=0, world=1)
    assert [p.grad_weight for p in pieces] == [0.75, 0.25]


def test_pieces_of_ranks_cover_each_micro_batch_once():
    """Every rank draws the same micro-batches and takes a contiguous share; the shares'
    log weights add up to 1 over ranks and micro-batches, the gradient weights to W."""
    from moopt.runner.accumulation import step_pieces

    cfg = RegressionConfig(n_items=12, batch=5)
    world = 3
    seen, logs, grads = [], 0.0, 0.0
    for rank in range(world):
        spec = RegressionTask().build(cfg, None).objectives["b"]
        for piece in step_pieces(spec, accum=2, rank=rank, world=world):
            seen += piece.batch["x"].tolist()
            logs += piece.log_weight
            grads += piece.grad_weight
    spec = RegressionTask().build(cfg, None).objectives["b"]
    whole = [next(spec.batches)["x"] for _ in range(2)]
    assert sorted(seen) == sorted(torch.cat(whole).tolist())
    assert logs == pytest.approx(1.0) and grads == pytest.approx(world)
    tiny = RegressionTask().build(RegressionConfig(n_items=12, batch=1), None)
    pieces = step_pieces(tiny.objectives["a"], accum=1, rank=2, world=3)
    assert [(p.grad_weight, len(p.batch["x"])) for p in pieces] == [(0.0, 1)]  # weightless


def test_epochs_count_batches_not_steps_with_accumulation(tmp_path):
    setup = RegressionTask().build(RegressionConfig(n_items=64, batch=4), None)
    assert total_steps(RegressionConfig(epochs=1, batch=4, n_items=64), setup) == 16
    assert total_steps(RegressionConfig(epochs=1, batch=4, n_items=64, grad_accum=4),
                       setup) == 4


@pytest.mark.parametrize("precision,param_dtype,output_dtype", [
    ("fp32", torch.float32, torch.float32),
    ("bf16-mixed", torch.float32, torch.bfloat16),
    ("bf16", torch.bfloat16, torch.bfloat16),
])
@pytest.mark.parametrize("schedule", SCHEDULES, ids=["alternating", "joint"])
def test_precision_modes_train_on_cpu(tmp_path, precision, param_dtype, output_dtype,
                                      schedule):
    res = _run(tmp_path, "p", dtype="float32", precision=precision, steps=30, lr=0.03,
               schedule=schedule, eval_every=10)
    assert {p.dtype for p in res.setup.model.parameters()} == {param_dtype}
    assert res.setup.extras["seen"]["output_dtype"] == output_dtype  # autocast or not
    assert all(torch.isfinite(torch.tensor(v)) for v in res.metrics.values())
    first = res.train.history.evals()[0][1]
    assert sum(res.metrics.values()) < 0.8 * sum(first.values())  # it trains
    run = json.loads((tmp_path / "p" / "run.json").read_text())
    assert run["hardware"]["precision"] == precision and run["hardware"]["device"] == "cpu"
    assert "## Hardware" in (tmp_path / "p" / "report.md").read_text()
    opt = res.train.optimizer
    for p in opt.param_groups[0]["params"]:  # the optimizer keeps float32 state (fp32)
        states = [v for v in opt.state[p].values() if isinstance(v, torch.Tensor)]
        assert states and {s.dtype for s in states} == {torch.float32}


def test_bf16_weights_lose_updates_below_half_an_ulp():
    """What the docs say about precision=bf16: an update under half an ulp of the weight
    is rounded away, the same update on float32 weights is not."""
    import moopt

    for dtype, moved in ((torch.bfloat16, False), (torch.float32, True)):
        w = torch.nn.Parameter(torch.full((4,), 1.0, dtype=dtype))
        opt = moopt.MultiObjectiveOptimizer([w], objectives=["a"], policy="shared", lr=1e-3)
        w.grad = torch.ones(4, dtype=dtype)
        opt.step()  # Adam's first step moves by lr = 1e-3 < 2**-8 / 2 (half an ulp at 1.0)
        assert bool((w != 1.0).all()) is moved


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_error_before_anything_is_created(tmp_path):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        _run(tmp_path, "nope", device="cuda")
    assert not (tmp_path / "nope").exists()
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "moopt", "run", "tests.runner.toy_task:ToyTask", "--device",
         "cuda:0", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "CUDA is not available" in proc.stderr
    assert not out.exists()


def test_parallel_without_torchrun_is_an_error(tmp_path, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="needs a torchrun launch"):
        _run(tmp_path, "par", parallel="fsdp")
    assert not (tmp_path / "par").exists()


def test_gradient_checkpointing_on_a_plain_module_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="gradient_checkpointing.*Sequential"):
        _run(tmp_path, "gc", gradient_checkpointing=True)


def test_run_fields_are_config_fields_with_descriptions():
    fields = RegressionConfig.model_fields
    for name in ("device", "precision", "grad_accum", "gradient_checkpointing", "parallel"):
        assert fields[name].description, name
    with pytest.raises(ValueError, match="grad_accum"):
        RegressionConfig(grad_accum=0)
