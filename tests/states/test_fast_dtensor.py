"""DTensor (FSDP2-style) parameters (one process, world size 1), with every storage backend:
the native CPU kernel steps their local shards exactly as it steps plain tensors; without it
the fast path declines them and the step equals the reference step on plain tensors."""

import pytest
import torch

import moopt

dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)


@pytest.fixture(scope="module")
def mesh():
    from torch.distributed.device_mesh import init_device_mesh

    started = not dist.is_initialized()
    if started:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield init_device_mesh("cpu", (1,))
    if started:
        dist.destroy_process_group()


def run_pair(mesh, storage, *, plain_fast_path):
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    gen = torch.Generator().manual_seed(0)
    full = torch.randn(80, 64, generator=gen)  # 5120 values: quantized by int8
    grads = [torch.randn(80, 64, generator=gen) for _ in range(4)]
    p = torch.nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
    q = torch.nn.Parameter(full.clone())
    opt_d = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", storage, lr=1e-2)
    opt_p = moopt.MultiObjectiveOptimizer([q], ["a", "b"], "bridged", storage, lr=1e-2,
                                          fast_path=plain_fast_path)
    for i, g in enumerate(grads):
        p.grad = distribute_tensor(g, mesh, [Shard(0)])
        q.grad = g.clone()
        opt_d.step(objective="a" if i % 2 else "b")
        opt_p.step(objective="a" if i % 2 else "b")
    assert isinstance(p.data, DTensor)
    assert not torch.equal(q.detach(), full)
    return p.full_tensor(), q.detach()


@pytest.mark.parametrize("storage", ["fp32", "bf16", "int8"])
def test_dtensor_without_native_kernels_equals_reference(mesh, storage, monkeypatch):
    monkeypatch.setenv("MOOPT_NATIVE", "0")
    # The fast path declines DTensors, so the default optimizer's DTensor step must equal
    # the reference path's step on the plain tensor, bit for bit.
    got, want = run_pair(mesh, storage, plain_fast_path=False)
    assert torch.equal(got, want)


@pytest.mark.parametrize("storage", ["fp32", "bf16", "int8"])
def test_dtensor_local_shards_take_the_native_kernel(mesh, storage, monkeypatch):
    from moopt.states.fast import native

    monkeypatch.setenv("MOOPT_NATIVE", "sync")
    assert native.library() is not None
    calls = []
    real = native.step
    monkeypatch.setattr(native, "step", lambda *a, **k: calls.append(1) or real(*a, **k))
    got, want = run_pair(mesh, storage, plain_fast_path=True)
    assert torch.equal(got, want)  # the same kernel on the same values
    assert len(calls) == 8  # 4 steps x (DTensor + plain), none declined
    _, reference = run_pair(mesh, storage, plain_fast_path=False)
    # Against the reference path, as in test_fast_paths: ulp differences, amplified only
    # where bridged's v_k^ + v_b^ cancels.
    diff = (got - reference).abs() / reference.abs().max()
    assert diff.max().item() < 1e-3 and diff.mean().item() < 1e-5
