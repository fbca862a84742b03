"""The compiled (torch.compile) kernels equal the reference path (slow: a C++ build)."""

import pytest
import torch

import moopt
from moopt.states.fast import compiled


@pytest.mark.slow
@pytest.mark.parametrize("policy,storage", [("bridged", "fp32"), ("bridged", "int8"),
                                            ("shared", "bf16"), ("decoupled", "int8")])
def test_compiled_kernel_matches_reference(policy, storage, monkeypatch):
    """Builds the compiled kernel (tens of seconds on a CPU) and holds it to the reference."""
    monkeypatch.setenv("MOOPT_COMPILE", "sync")
    monkeypatch.setenv("MOOPT_NATIVE", "0")  # on CPU the native kernels come first

    def go(fast):
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(256, 512, generator=gen))]
        opt = moopt.MultiObjectiveOptimizer(params, ["a", "b"], policy, storage, lr=1e-2,
                                            weight_decay=0.1, fast_path=fast)
        for i in range(7):
            params[0].grad = torch.randn(256, 512, generator=gen)
            opt.step(objective="a" if i % 3 == 0 else "b")
        return params[0].detach(), opt

    got, opt = go(True)
    want, _ = go(False)
    assert compiled.pending() == 0 and any(k[0] == policy for k in compiled._entries)
    diff = (got - want).abs() / want.abs().max()
    # As in the eager comparison: one-ulp differences, amplified only on the few coordinates
    # where bridged's second-moment sum cancels (measured: 1 of 131,072 coordinates, 3 lr).
    assert diff.mean().item() < (1e-6 if storage == "fp32" else 1e-4)
    assert (diff > 1e-4).float().mean().item() < 1e-3
    assert diff.max().item() < 0.05
