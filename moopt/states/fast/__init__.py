"""Fast paths of the built-in sharing policies (the ``SharingPolicy.fast_step`` hook).

:func:`fast_step` (alias :func:`dispatch`, which the built-in policies call) runs a whole
alternating step of ``shared``, ``decoupled`` or ``bridged`` with fused per-tensor kernels
(compiled in the background for large tensors, eager otherwise) and declines (returns
False) where it cannot help, so the optimizer falls back to the reference path.
:func:`with_fast_path` wires the same path into an instance of a built-in policy's subclass.

Example:
    >>> import torch, moopt
    >>> from moopt.states.fast import with_fast_path
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> policy = with_fast_path("shared")
    >>> opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], policy, lr=0.1)
    >>> p.grad = torch.ones(2); opt.step(objective="a")
    >>> p.detach()
    tensor([0.9000, 0.9000])
"""

from __future__ import annotations

from functools import cache

from moopt.states.policy import POLICIES, GroupBatch, SharingPolicy


def fast_step(policy: str, batch: GroupBatch) -> bool:
    """The fast path of built-in ``policy`` ("shared", "decoupled", "bridged") for ``batch``."""
    from moopt.states.fast.step import fast_step as run

    return run(policy, batch)


# The name the built-in policies' ``fast_step`` calls (moopt.states.policy.builtin_fast_step).
dispatch = fast_step


@cache
def _fast_class(name: str) -> type[SharingPolicy]:
    base = POLICIES.get(name)

    def hook(self: SharingPolicy, batch: GroupBatch) -> bool:
        return fast_step(name, batch)

    return type(f"Fast{base.__name__}", (base,), {"fast_step": hook})


def with_fast_path(name: str) -> SharingPolicy:
    """An instance of the built-in policy ``name`` whose ``fast_step`` is this package's."""
    return _fast_class(name)()
