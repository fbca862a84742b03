"""Which kernel steps each parameter, and running them: the optimizer's fast path.

For every parameter of a step, in this order:

1. **native**: the C kernels of a built-in policy (:mod:`moopt.states.fast.native_step`),
   where they take the parameter (float32 on a CPU, built-in storage);
2. **compiled** / **eager**: the fused function derived from the declaration
   (:mod:`moopt.states.fast.fused`), when every buffer's backend gives a codec in torch ops.
   It is compiled (:mod:`moopt.states.fast.compiled`) on CPUs and CUDA devices for calls of
   at least :data:`COMPILE_MIN_NUMEL` values, and runs eagerly otherwise (or with
   ``MOOPT_COMPILE=0``). Tensors below :data:`GROUP_MAX_NUMEL` values whose codecs are
   elementwise are concatenated with the others of the same signature into one call;
3. **reference**: the per-tensor reference path, for backends without a codec.

The choice depends only on the parameters, their state, the storage and the environment,
never on timing. :meth:`FastPath.report` says what stepped each group last, and why where
it was not native or compiled.

Example:
    >>> import torch, moopt
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = moopt.MultiObjectiveOptimizer(model.parameters(), ["a", "b"], "bridged")
    >>> model(torch.ones(1, 4)).sum().backward(); opt.step(objective="a")
    >>> [entry["path"] for entry in opt.kernel_report()] in (["native"], ["eager"])
    True
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from moopt.states.fast import compiled
from moopt.states.fast.fused import fused_function
from moopt.states.fast.native_step import NativeSteps
from moopt.states.layout import part_key
from moopt.states.policy import SharingPolicy
from moopt.states.reference import ParamStep
from moopt.states.rule import Rule
from moopt.states.storage import Codec, StorageBackend, compute_dtype
from moopt.states.tensors import local

# Compile only calls this large: below it a compiled call's fixed cost (guards, launch) is
# not worth the build, and small models (tests, toys) never wait for a compiler.
COMPILE_MIN_NUMEL = 1 << 16
# Parameters below this many values share one call per signature (concatenated).
GROUP_MAX_NUMEL = 1 << 16

Paths = dict[str, dict[str, Any]]


class FastPath:
    """The fast path of one optimizer (its policy and storage)."""

    def __init__(self, policy: SharingPolicy, storage: Mapping[str, StorageBackend]) -> None:
        self.policy = policy
        self.storage = storage
        self.native = NativeSteps(policy, storage)
        self._config = json.dumps(policy.config(), sort_keys=True, default=repr)
        self._eager: dict[Any, Callable[..., None]] = {}
        self.last: dict[int, Paths] = {}

    # ------------------------------------------------------------------------- stepping
    def step(self, group: int, items: Sequence[ParamStep],
             reference: Callable[[ParamStep], None]) -> None:
        """Step every item of param group ``group``; ``reference(item)`` runs the reference
        path for the items no fused path takes."""
        paths: Paths = {}
        batches: dict[tuple, list[ParamStep]] = {}
        rest: Sequence[ParamStep] = items
        if self.native.usable():
            takes = [item for item in items if self.native.takes(item)]
            if takes:
                declined = self.native.step_many(self.policy, takes)
                if len(takes) > len(declined):
                    _record(paths, "native", len(takes) - len(declined), "")
                stepped = {id(item) for item in takes}.difference(map(id, declined))
                rest = [item for item in items if id(item) not in stepped]
        for item in rest:
            rule = Rule.of(self.policy, len(item.objectives))
            codecs, why = self._codecs(rule, item)
            if codecs is None:
                reference(item)
                _record(paths, "reference", 1, why)
                continue
            p = local(item.param)
            if p.numel() < GROUP_MAX_NUMEL and all(c.elementwise for c in codecs):
                batches.setdefault(self._signature(rule, codecs, item), []).append(item)
                continue
            path, why = self._fused(rule, codecs, [item])
            _record(paths, path, 1, why)
        for members in batches.values():
            rule = Rule.of(self.policy, len(members[0].objectives))
            codecs, _ = self._codecs(rule, members[0])
            path, why = self._fused(rule, codecs, members)
            _record(paths, path, len(members), why)
        self.last[group] = paths

    def _codecs(self, rule: Rule, item: ParamStep) -> tuple[list[Codec] | None, str]:
        codecs = []
        for spec, _ in rule.slots(item.objectives):
            backend = self.storage[spec.role]
            codec = backend.codec(item.param, signed=spec.signed)
            if codec is None:
                return None, (f"storage {backend!r} of role {spec.role!r} gives no codec in "
                              "torch ops")
            codecs.append(codec)
        return codecs, ""

    def _signature(self, rule: Rule, codecs: Sequence[Codec], item: ParamStep) -> tuple:
        """What a fused function and its inputs are specialised on (items with equal
        signatures and scalars may share one call)."""
        p = local(item.param)
        parts = tuple(local(item.state[part_key(spec.key(k), name)]).dtype
                      for (spec, k), codec in zip(rule.slots(item.objectives), codecs)
                      for name in codec.parts)
        return (type(self.policy), self._config, rule.count, tuple(c.key for c in codecs),
                p.dtype, tuple(local(g).dtype for g in item.grads), parts, p.device,
                item.scalars)

    def _fused(self, rule: Rule, codecs: Sequence[Codec],
               items: Sequence[ParamStep]) -> tuple[str, str]:
        """One call of the fused function on ``items`` (concatenated if several); returns
        (path, why it is not compiled)."""
        first = items[0]
        inputs, finish = _flat_inputs(rule, codecs, items)
        numel = inputs[0].numel()
        device = inputs[0].device
        s = torch.tensor(first.scalars, dtype=compute_dtype(first.param), device=device)
        args = (inputs[0], inputs[1], inputs[2],
                [codec.constants(device) for codec in codecs], s)
        key = self._signature(rule, codecs, first)[:-1]
        why = _why_eager(device, numel)
        if why is None:
            kernel = compiled.get(key, lambda: fused_function(rule, codecs))
            path = kernel(*args)  # falls back to the eager function if the build fails
            why = f"compiling failed ({kernel.failure})" if path == "eager" else ""
        else:
            path = "eager"
            if key not in self._eager:
                self._eager[key] = fused_function(rule, codecs)
            self._eager[key](*args)
        finish()
        return path, why


def _why_eager(device: torch.device, numel: int) -> str | None:
    """Why a call of ``numel`` values on ``device`` runs eagerly, or None (it compiles)."""
    if compiled.mode() == "off":
        return "MOOPT_COMPILE=0"
    if device.type not in ("cpu", "cuda"):
        return f"no compiled kernels on {device.type}"
    if numel < COMPILE_MIN_NUMEL:
        return f"{numel} values per call, below the compile threshold of {COMPILE_MIN_NUMEL}"
    return None


def _record(paths: Paths, path: str, count: int, why: str) -> None:
    entry = paths.setdefault(path, {"params": 0, "why": set()})
    entry["params"] += count
    if why:
        entry["why"].add(why)


def _flat(t: Tensor, writes: list[tuple[Tensor, Tensor]]) -> Tensor:
    """``t`` as a flat tensor: a view if contiguous, else a copy written back by ``finish``."""
    if t.is_contiguous():
        return t.view(-1)
    copy = t.reshape(-1).clone()
    writes.append((t, copy))
    return copy


def _flat_inputs(rule: Rule, codecs: Sequence[Codec], items: Sequence[ParamStep]):
    """``((p, grads, parts), finish)``: the fused function's flat inputs for ``items``
    (concatenated when several), and the function that writes concatenated or copied
    outputs back."""
    names = [[part_key(spec.key(k), name) for name in codec.parts]
             for (spec, k), codec in zip(rule.slots(items[0].objectives), codecs)]
    params = [local(item.param.detach()) for item in items]
    if len(items) == 1:
        writes: list[tuple[Tensor, Tensor]] = []
        state = items[0].state
        grads = [local(g).reshape(-1) for g in items[0].grads]
        p = _flat(params[0], writes)
        parts = [[_flat(local(state[name]), writes) for name in slot] for slot in names]

        def finish() -> None:
            if writes:
                torch._foreach_copy_([t for t, _ in writes],
                                     [s.view(t.shape) for t, s in writes])

        return (p, grads, parts), finish
    # Several (small) tensors: flattened into one tensor per input, and the outputs' views
    # unflattened back onto them (both loops in C++: per-tensor Python costs more than the
    # step itself here).
    grads = [_flatten_dense_tensors([local(item.grads[k]) for item in items])
             for k in range(rule.count)]
    targets = [params] + [[local(item.state[name]) for item in items]
                          for slot in names for name in slot]
    flats = [_flatten_dense_tensors(group) for group in targets]
    p, rest = flats[0], iter(flats[1:])
    parts = [[next(rest) for _ in slot] for slot in names]

    def finish_many() -> None:
        sources = [view for flat, group in zip(flats, targets)
                   for view in _unflatten_dense_tensors(flat, group)]
        torch._foreach_copy_([t for group in targets for t in group], sources)

    return (p, grads, parts), finish_many
