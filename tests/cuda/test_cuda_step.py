"""The optimizer on a CUDA device equals the optimizer on the CPU, for every registered
policy and storage, in alternating and joint mode; the runner trains on CUDA.

float64 parameters: the CPU and CUDA kernels round each operation correctly but may fuse
or order them differently, so results agree to float64 rounding (1e-12 relative after
three steps), 8-bit codes and bf16 state included (they are encoded from float32 values,
which float64 differences of 1e-16 practically never move across a rounding boundary).
float32 parameters: the two devices' float32 roundings differ by ~1e-7 relative; a
quantized state (bf16, int8) may then round one element to the neighbouring code, which
changes that element's later updates by up to about one learning rate, and bridged's
ill-conditioned coordinates (a small second moment as the difference of large ones) do
the same even in fp32 state. So: 99% of the elements within 1e-4 relative, and none
further off than two learning rates per step. (A proxy measured on the CPU, the
reference per-tensor path against the native fast path, float32, bridged alternating:
0.1% of the weight's elements differ by more, at most 0.14 learning rates.)

Skipped without CUDA (tests/conftest.py); ``make device-check`` runs them.
"""

from __future__ import annotations

import json

import pytest
import torch

import moopt

pytestmark = pytest.mark.cuda

DEVICE = torch.device("cuda")
OBJECTIVES = ["forget", "retain"]
LR = 1e-2
STEPS = 3
MODES = ["alternating", "joint"]


def _params(dtype: torch.dtype) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    # 19,200 values: quantized by int8 (>= 4,096); the bias stays full precision.
    return [torch.randn(64, 300, generator=gen, dtype=torch.float64).to(dtype),
            torch.randn(64, generator=gen, dtype=torch.float64).to(dtype)]


def _grads(step: int, shapes: list[torch.Size], dtype: torch.dtype) -> dict[str, list]:
    gen = torch.Generator().manual_seed(100 + step)
    scale = {"forget": 3.0, "retain": 1.0}  # unequal objectives, as in unlearning
    return {k: [scale[k] * torch.randn(s, generator=gen, dtype=torch.float64).to(dtype)
                for s in shapes] for k in OBJECTIVES}


def run_steps(device: torch.device, policy: str, storage: str, mode: str,
              dtype: torch.dtype) -> tuple[list[torch.Tensor], dict]:
    """Three steps on ``device`` from the same start and gradients; parameters and the
    optimizer's state, back on the CPU."""
    params = [torch.nn.Parameter(p.to(device)) for p in _params(dtype)]
    opt = moopt.MultiObjectiveOptimizer(params, objectives=OBJECTIVES, policy=policy,
                                        storage=storage, lr=LR, weight_decay=0.01,
                                        lr_ratios={"forget": 0.5})
    for step in range(STEPS):
        grads = _grads(step, [p.shape for p in params], dtype)
        if mode == "alternating":
            name = OBJECTIVES[step % 2]
            for p, g in zip(params, grads[name]):
                p.grad = g.to(device)
            opt.step(objective=name)
        else:
            for name in OBJECTIVES:
                for p, g in zip(params, grads[name]):
                    p.grad = g.to(device)
                opt.stash_grads(name)
            opt.step(weights={"forget": 0.3, "retain": 1.0})
        opt.zero_grad()
    state = {i: {k: (v.cpu() if isinstance(v, torch.Tensor) else v)
                 for k, v in opt.state[p].items()} for i, p in enumerate(params)}
    return [p.detach().cpu() for p in params], state


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("storage", moopt.list_storages())
@pytest.mark.parametrize("policy", moopt.list_policies())
def test_float64_step_on_cuda_equals_cpu(policy, storage, mode):
    cpu_p, cpu_s = run_steps(torch.device("cpu"), policy, storage, mode, torch.float64)
    gpu_p, gpu_s = run_steps(DEVICE, policy, storage, mode, torch.float64)
    start = _params(torch.float64)
    for a, b, p0 in zip(gpu_p, cpu_p, start):
        assert not torch.equal(b, p0)  # the steps moved the parameters
        assert _rel(a, b) <= 1e-12
    for i in cpu_s:
        assert cpu_s[i].keys() == gpu_s[i].keys()
        for key, want in cpu_s[i].items():
            got = gpu_s[i][key]
            if not isinstance(want, torch.Tensor):
                assert got == want, key
            elif want.dtype == torch.uint8:  # 8-bit codes: the same codes
                assert torch.equal(got, want), key
            else:
                assert got.dtype == want.dtype and _rel(got, want) <= 1e-12, key


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("storage", moopt.list_storages())
@pytest.mark.parametrize("policy", moopt.list_policies())
def test_float32_step_on_cuda_equals_cpu_within_rounding(policy, storage, mode):
    cpu_p, _ = run_steps(torch.device("cpu"), policy, storage, mode, torch.float32)
    gpu_p, _ = run_steps(DEVICE, policy, storage, mode, torch.float32)
    close = []
    for a, b in zip(gpu_p, cpu_p):
        diff = (a - b).abs()
        assert float(diff.max()) <= 2 * LR * STEPS
        close.append((diff <= 1e-4 * b.abs().max()).flatten())
    assert float(torch.cat(close).double().mean()) >= 0.99


def test_runner_trains_on_cuda_like_on_the_cpu(tmp_path):
    """The regression task (float64, decoupled) through run_task on CUDA and on the CPU."""
    from moopt.runner.run import run_task
    from tests.runner.regression_task import RegressionConfig, RegressionTask

    def run(device: str, name: str, **kw):
        cfg = RegressionConfig(steps=6, lr=0.02, policy="decoupled", device=device,
                               out=tmp_path / name, progress=False, grad_accum=2, **kw)
        return run_task(RegressionTask(), cfg, plots=False)

    gpu, cpu = run("cuda", "gpu"), run("cpu", "cpu")
    assert next(gpu.setup.model.parameters()).device.type == "cuda"
    assert gpu.setup.extras["seen"]["input_device"].type == "cuda"
    for a, b in zip(gpu.setup.model.parameters(), cpu.setup.model.parameters()):
        assert _rel(a.detach().cpu(), b.detach()) <= 1e-12
    run_json = json.loads((tmp_path / "gpu" / "run.json").read_text())
    assert run_json["hardware"]["device"].startswith("cuda")
    assert "device_name" in run_json["hardware"]
    mixed = run("cuda", "mixed", dtype="float32", precision="bf16-mixed")
    assert mixed.setup.extras["seen"]["output_dtype"] == torch.bfloat16
    assert all(torch.isfinite(torch.tensor(v)) for v in mixed.metrics.values())


def test_a_stopped_cuda_run_resumes_bit_identically(tmp_path):
    from moopt.runner.run import run_task
    from tests.runner.regression_task import RegressionConfig, RegressionTask

    def cfg(name):
        return RegressionConfig(steps=6, lr=0.02, device="cuda", dtype="float32",
                                precision="bf16-mixed", out=tmp_path / name, progress=False)

    full = run_task(RegressionTask(), cfg("full"), plots=False)
    run_task(RegressionTask(), cfg("split"), stop_after=3, plots=False)
    rest = run_task(RegressionTask(), cfg("split"), resume=True, plots=False)
    for a, b in zip(rest.setup.model.parameters(), full.setup.model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["unlearning", "safety", "multitask-vision"])
def test_task_finishes_on_cuda_in_bf16_mixed(tmp_path, name):
    """A tiny run of each task on CUDA with bf16-mixed and grad_accum 2 (the full smoke
    presets run in make device-check)."""
    pytest.importorskip("transformers", reason="the LLM tasks need moopt[llm]")
    from moopt.runner.run import run_task
    from tests.runner.test_run_fields_tasks import tiny_task

    task, cfg = tiny_task(name, tmp_path, precision="bf16-mixed", device="cuda")
    res = run_task(task, cfg, plots=False)
    assert res.train.finished
    assert all(torch.isfinite(torch.tensor(v)) for v in res.metrics.values())
    assert {p.device.type for p in res.setup.model.parameters()} == {"cuda"}
    hardware = json.loads((tmp_path / "run" / "run.json").read_text())["hardware"]
    assert hardware["device"].startswith("cuda") and hardware["precision"] == "bf16-mixed"
