"""The int8 storage backend: layout, threshold fallback, errors, exact save/restore."""

import io

import pytest
import torch

import moopt
from moopt.errors import StateMismatchError
from moopt.states.int8 import Int8Storage
from moopt.states.quantization import get_map


def test_layout_and_threshold():
    backend = Int8Storage()
    big = backend.allocate(torch.zeros(64, 80), signed=True)  # 5120 values: 20 blocks
    assert big["codes"].dtype == torch.uint8 and big["codes"].shape == (5120,)
    assert big["absmax"].dtype == torch.float32 and big["absmax"].shape == (20,)
    small = backend.allocate(torch.zeros(4095), signed=False)
    assert set(small) == {""} and small[""].dtype == torch.float32
    assert set(Int8Storage(min_size=0).allocate(torch.zeros(3), signed=True)) == {"codes",
                                                                                  "absmax"}
    f64 = backend.allocate(torch.zeros(10, dtype=torch.float64), signed=True)
    assert f64[""].dtype == torch.float64


@pytest.mark.parametrize("signed", [True, False])
def test_write_read_round_trip(signed):
    backend = Int8Storage(block_size=128, min_size=0)
    p = torch.zeros(33, 17)
    parts = backend.allocate(p, signed=signed)
    assert bool((backend.read(parts, p, signed=signed) == 0).all())
    value = torch.randn(33, 17, generator=torch.Generator().manual_seed(0))
    if not signed:
        value = value.abs()
    backend.write(parts, value, signed=signed)
    got = backend.read(parts, p, signed=signed)
    assert got.shape == p.shape and got.dtype == torch.float32
    bound = get_map(signed).max_abs_error() * value.abs().max() * 1.0001
    assert (got - value).abs().max() <= bound
    # float64 parameters read back in float64.
    p64 = p.double()
    assert backend.read(parts, p64, signed=signed).dtype == torch.float64


def test_unsigned_map_clamps_negatives_to_zero():
    backend = Int8Storage(min_size=0)
    p = torch.zeros(4)
    parts = backend.allocate(p, signed=False)
    backend.write(parts, torch.tensor([-1.0, 2.0, -0.5, 1.0]), signed=False)
    got = backend.read(parts, p, signed=False)
    assert got[0] == 0 and got[2] == 0 and got[1] == 2.0


def test_unit_roundoff_is_the_map_error():
    backend = Int8Storage()
    big, small = torch.zeros(5000), torch.zeros(10)
    assert backend.unit_roundoff(big, signed=True) == pytest.approx(0.9 / 128, rel=1e-3)
    assert backend.unit_roundoff(big, signed=False) == pytest.approx(0.9 / 256, rel=1e-3)
    assert backend.unit_roundoff(big) == backend.unit_roundoff(big, signed=True)
    assert backend.unit_roundoff(small) == 2.0**-24


@pytest.mark.parametrize("kwargs", [{"block_size": 0}, {"block_size": 2.5},
                                    {"min_size": -1}, {"block_size": True}])
def test_bad_config_names_the_value(kwargs):
    (key, value), = kwargs.items()
    with pytest.raises(ValueError, match=f"{key}.*{value!r}"):
        Int8Storage(**kwargs)


def test_parts_from_another_layout_are_refused():
    backend = Int8Storage()
    p = torch.zeros(5000)
    with pytest.raises(StateMismatchError, match="codes"):
        backend.read({"": torch.zeros(5000)}, p, signed=True)
    other = Int8Storage(block_size=128).allocate(p, signed=True)
    with pytest.raises(StateMismatchError, match="block_size=256"):
        backend.read(other, p, signed=True)
    with pytest.raises(StateMismatchError, match="full precision"):
        backend.read(other, torch.zeros(100), signed=True)


def _train(opt, params, gen, steps, names):
    for i in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step(objective=names[i % len(names)])


@pytest.mark.parametrize("policy", moopt.list_policies())
def test_state_dict_is_compact_and_restores_exactly(policy):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(80, 64)), torch.nn.Parameter(torch.randn(64))]
    opt = moopt.MultiObjectiveOptimizer(params, ["a", "b"], policy, "int8", lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    _train(opt, params, gen, 4, ["a", "b", "b"])
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    state0 = saved["state"][0]
    quantized = {k: v for k, v in state0.items() if isinstance(v, torch.Tensor)}
    assert all(v.dtype in (torch.uint8, torch.float32) for v in quantized.values())
    assert sum(v.dtype == torch.uint8 for v in quantized.values()) == len(quantized) // 2
    assert all(v.dtype == torch.float32 for v in saved["state"][1].values()
               if isinstance(v, torch.Tensor))  # 64 values: below min_size
    clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = moopt.MultiObjectiveOptimizer(clones, ["a", "b"], policy, "int8", lr=1e-2)
    opt2.load_state_dict(saved)
    for key, value in opt.state[params[0]].items():
        other = opt2.state[clones[0]][key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other
    gen1, gen2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    _train(opt, params, gen1, 3, ["b", "a"])
    _train(opt2, clones, gen2, 3, ["b", "a"])
    for p, q in zip(params, clones):
        assert torch.equal(p, q)


def test_loading_into_another_backend_changes_nothing():
    p = torch.nn.Parameter(torch.randn(80, 64))
    opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], "bridged", "int8", lr=1e-2)
    p.grad = torch.randn(80, 64)
    opt.step(objective="a")
    saved = opt.state_dict()
    for storage in ("fp32", Int8Storage(block_size=128), "bf16"):
        q = torch.nn.Parameter(p.detach().clone())
        other = moopt.MultiObjectiveOptimizer([q], ["a", "b"], "bridged", storage, lr=1e-2)
        q.grad = torch.randn(80, 64)
        other.step(objective="b")
        before = {k: v.clone() if isinstance(v, torch.Tensor) else v
                  for k, v in other.state[q].items()}
        with pytest.raises(StateMismatchError, match="int8"):
            other.load_state_dict(saved)
        after = other.state[q]
        assert before.keys() == after.keys()
        assert all(torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k]
                   for k, v in before.items())


def test_memory_per_parameter():
    params = [torch.nn.Parameter(torch.zeros(256, 256)) for _ in range(2)]
    opt = moopt.MultiObjectiveOptimizer(params, ["a", "b"], "bridged", "int8")
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step(objective="a")
    assert opt.memory_report()["bytes_per_param"] == pytest.approx(6 * (1 + 4 / 256))
