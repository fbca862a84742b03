"""The documented 4-bit backend example (docs/storage.md) runs as written and works."""

import re
from pathlib import Path

import pytest
import torch

import moopt
from moopt.states.storage import STORAGES, get_storage

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"


@pytest.fixture(scope="module")
def int4():
    text = DOC.read_text()
    section = text[text.index("### Example: a 4-bit backend"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    yield namespace["Int4Storage"]
    STORAGES.unregister("int4")


def test_example_registers_and_round_trips(int4):
    backend = get_storage("int4")
    assert isinstance(backend, int4)
    p = torch.zeros(7, 19)  # odd count: the last byte holds one code
    parts = backend.allocate(p, signed=True)
    assert parts["packed"].numel() == 67 and parts["absmax"].numel() == 3
    value = torch.randn(7, 19, generator=torch.Generator().manual_seed(0))
    backend.write(parts, value, signed=True)
    got = backend.read(parts, p, signed=True)
    assert got.shape == p.shape
    # A 16-entry map: coarse, but bounded by the map's worst gap times the block scale.
    assert (got - value).abs().max() <= backend.unit_roundoff(p) * value.abs().max() * 1.0001
    assert (got - value).abs().max() > 0.01  # really 4 bits, not a float copy


def test_example_trains_with_every_policy(int4):
    for policy in moopt.list_policies():
        torch.manual_seed(0)
        model = torch.nn.Linear(16, 4)
        opt = moopt.MultiObjectiveOptimizer(model.parameters(), ["a", "b"], policy,
                                            storage={"default": "fp32", "delta": "int4"},
                                            lr=1e-2)
        x, y = torch.randn(64, 16), torch.randn(64, 4)
        first = None
        for i in range(40):
            loss = (model(x) - y).pow(2).mean()
            first = first if first is not None else loss.item()
            loss.backward()
            opt.step(objective="a" if i % 4 == 0 else "b")
            opt.zero_grad()
        assert (model(x) - y).pow(2).mean().item() < 0.9 * first, policy
        if policy != "shared":
            assert any(k.endswith("#packed") for k in opt.state[model.weight])


def test_example_codec_takes_the_fused_path(int4, monkeypatch):
    """The codec in torch ops gives the backend the fused path, equal to the reference path
    (which reads and writes through the same codec) bit for bit."""
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    results = []
    for fast_path in (True, False):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(33, 7, generator=gen)) for _ in range(2)]
        opt = moopt.MultiObjectiveOptimizer(params, ["a", "b"], "bridged", "int4", lr=1e-2,
                                            fast_path=fast_path)
        for i in range(4):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step(objective="ab"[i % 2])
        results.append((params, opt))
    (fast, opt_fast), (ref, opt_ref) = results
    assert {e["path"] for e in opt_fast.kernel_report()} == {"eager"}
    for a, b in zip(fast, ref):
        assert torch.equal(a, b)
        for key, value in opt_ref.state[b].items():
            assert torch.equal(opt_fast.state[a][key], value) if isinstance(
                value, torch.Tensor) else opt_fast.state[a][key] == value
