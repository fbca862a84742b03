"""DTensor (FSDP2-style) parameters: the fast path declines them and the step, with every
storage backend, equals the reference step on plain tensors (one process, world size 1)."""

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


@pytest.mark.parametrize("storage", ["fp32", "bf16", "int8"])
def test_dtensor_steps_equal_plain_steps(mesh, storage):
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    gen = torch.Generator().manual_seed(0)
    full = torch.randn(80, 64, generator=gen)  # 5120 values: quantized by int8
    grads = [torch.randn(80, 64, generator=gen) for _ in range(4)]
    p = torch.nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
    q = torch.nn.Parameter(full.clone())
    opt_d = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", storage,
                                          lr=1e-2)
    # The fast path declines DTensors, so the default optimizer's DTensor step must equal
    # the reference path's step on the plain tensor, bit for bit.
    opt_p = moopt.MultiObjectiveOptimizer([q], ["a", "b"], "bridged", storage, lr=1e-2,
                                          fast_path=False)
    for i, g in enumerate(grads):
        p.grad = distribute_tensor(g, mesh, [Shard(0)])
        q.grad = g.clone()
        opt_d.step(objective="a" if i % 2 else "b")
        opt_p.step(objective="a" if i % 2 else "b")
    assert isinstance(p.data, DTensor)
    assert torch.equal(p.full_tensor(), q.detach())
    assert not torch.equal(q.detach(), full)
