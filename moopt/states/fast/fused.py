"""The fused step of a declared policy: decode every buffer, apply the rule, encode the new
values, move the parameter, in one function of flat tensors written in torch ops.

``torch.compile`` turns it into one loop that reads and writes each state byte once
(:mod:`moopt.states.fast.compiled`); run eagerly it computes exactly what the reference path
computes, operation by operation. One function serves a (policy, objective count, buffer
codecs) signature; it takes

* ``p``: the flat parameter (any floating dtype; updated in place),
* ``grads``: one flat gradient per objective taking part,
* ``parts``: per buffer slot (:meth:`moopt.states.rule.Rule.slots`), its flat stored parts
  in the codec's order (updated in place),
* ``constants``: per slot, the codec's constant tensors,
* ``s``: the scalar vector (:meth:`moopt.states.rule.Rule.scalars`) in the compute dtype.

Example (the first Adam step of a parameter moves it by lr):
    >>> import torch
    >>> from moopt.states.fast.fused import fused_function
    >>> from moopt.states.policy import StepInfo, get_policy
    >>> from moopt.states.rule import Rule
    >>> from moopt.states.storage import PLAIN
    >>> rule = Rule.of(get_policy("shared"), 1)
    >>> step = fused_function(rule, (PLAIN, PLAIN))
    >>> p, m, v = torch.zeros(3), torch.zeros(3), torch.zeros(3)
    >>> info = StepInfo(T=1, t=1, objective="a", betas=(0.9, 0.95), base_betas=(0.9, 0.95),
    ...                 eps=1e-8, guard=8.0, unit_roundoff=2**-24)
    >>> s = torch.tensor(rule.scalars(("a",), [1.0], [0.1], 0.0, lambda k: info))
    >>> step(p, [torch.ones(3)], [[m], [v]], [(), ()], s)
    >>> p
    tensor([-0.1000, -0.1000, -0.1000])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from moopt.states.rule import Rule
from moopt.states.storage import Codec

FusedFunction = Callable[[Tensor, Sequence[Tensor], Sequence[Sequence[Tensor]],
                          Sequence[Sequence[Tensor]], Tensor], None]


def fused_function(rule: Rule, codecs: Sequence[Codec]) -> FusedFunction:
    """The fused step of ``rule`` with one codec per buffer slot."""
    codecs = tuple(codecs)

    def step(p, grads, parts, constants, s):
        dtype = s.dtype
        scalars = s.unbind(0)
        values = [codec.decode(part, const, dtype, p.numel())
                  for codec, part, const in zip(codecs, parts, constants)]
        update, new = rule.apply([g.to(dtype) for g in grads], values, scalars)
        p.copy_(p.to(dtype) * scalars[0] - update)
        for codec, part, const, value in zip(codecs, parts, constants, new):
            if value is not None:
                for target, content in zip(part, codec.encode(value, const)):
                    target.copy_(content)

    return step
