"""DTensor (FSDP2-style) parameters on a 1-rank gloo mesh, for every registered policy (and
the contract suite's toy policy) and every registered storage, in both modes: each path
steps the local shards exactly as it steps plain tensors (bit for bit), and a DTensor's
state is stored per shard."""

import pytest
import torch

import moopt
from tests.states.toy_policy import POLICY_NAMES

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


def run_pair(mesh, policy, storage, *, joint, fast_path):
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    gen = torch.Generator().manual_seed(0)
    full = torch.randn(80, 64, generator=gen)  # 5120 values: quantized by int8
    grads = [torch.randn(80, 64, generator=gen) for _ in range(4)]
    p = torch.nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
    q = torch.nn.Parameter(full.clone())
    opts = [moopt.MultiObjectiveOptimizer([t], ["a", "b"], policy, storage, lr=1e-2,
                                          fast_path=fast_path) for t in (p, q)]
    for i, g in enumerate(grads):
        for t, opt in zip((p, q), opts):
            wrap = (lambda x: distribute_tensor(x, mesh, [Shard(0)])) if t is p else \
                (lambda x: x.clone())
            if joint:
                t.grad = wrap(g)
                opt.stash_grads("a")
                t.grad = wrap(-0.25 * g)
                opt.stash_grads("b")
                opt.step(weights={"a": 1.0, "b": 2.0})
            else:
                t.grad = wrap(g)
                opt.step(objective="a" if i % 2 else "b")
    assert isinstance(p.data, DTensor)
    assert not torch.equal(q.detach(), full)
    return p.full_tensor(), q.detach(), opts


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "reference"])
@pytest.mark.parametrize("joint", [False, True], ids=["alternating", "joint"])
@pytest.mark.parametrize("storage", moopt.list_storages())
@pytest.mark.parametrize("policy", POLICY_NAMES, indirect=True)
def test_dtensor_steps_equal_plain_steps(mesh, policy, storage, joint, fast_path,
                                         monkeypatch):
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    monkeypatch.setenv("MOOPT_NATIVE", "sync")
    got, want, (opt_d, opt_p) = run_pair(mesh, policy, storage, joint=joint,
                                         fast_path=fast_path)
    assert torch.equal(got, want)
    # The same path on the local shard as on the plain tensor.
    assert opt_d.kernel_report() == opt_p.kernel_report()
