"""Stepping parameters through the native CPU kernels (``native.c``): which parameters they
take, and each parameter's buffer array (built once, reused while its state tensors live).

Only the built-in policies have native kernels (:data:`moopt.states.fast.native_tables.KERNELS`);
they take float32 CPU parameters (a DTensor's local shard) with contiguous float32
gradients and buffers stored by the built-in backends: fp32, bf16 (round to nearest) and
int8 and fp8 (one block size for every 8-bit buffer of a step).

Example:
    >>> from moopt.states.fast.native_step import NativeSteps
    >>> from moopt.states.policy import get_policy
    >>> from moopt.states.storage import resolve_storage
    >>> policy = get_policy("bridged")
    >>> NativeSteps(policy, resolve_storage("fp32", policy.roles())).family
    'bridged'
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from moopt.states.bf16 import BF16Storage
from moopt.states.fast import native
from moopt.states.fast.native_tables import kernel_of
from moopt.states.fp8 import Fp8Storage
from moopt.states.int8 import Int8Storage
from moopt.states.layout import part_key
from moopt.states.policy import SharingPolicy
from moopt.states.reference import ParamStep
from moopt.states.rule import Rule
from moopt.states.storage import FP32Storage, StorageBackend
from moopt.states.tensors import local


def _native_kind(backend: StorageBackend) -> bool:
    """Whether the kernels read and write this backend's buffers."""
    if type(backend) in (FP32Storage, Int8Storage, Fp8Storage):
        return True
    return type(backend) is BF16Storage and not backend.stochastic_rounding


def _plain_ok(t: Tensor) -> bool:
    return (t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous())


def _still_valid(refs: list[tuple[str, weakref.ref]], state: Mapping[str, Any]) -> bool:
    """Whether every tensor a cached buffer array points into is alive and still the state's
    tensor under its key (a missing key with a dead reference is not a match: the array
    would point into freed memory)."""
    for key, ref in refs:
        tensor = ref()
        if tensor is None or state.get(key) is not tensor:
            return False
    return True


class NativeSteps:
    """The native kernels of one optimizer's policy and storage."""

    def __init__(self, policy: SharingPolicy, storage: Mapping[str, StorageBackend]) -> None:
        self.family = kernel_of(policy)
        self.storage = storage
        self.backends_ok = all(_native_kind(b) for b in storage.values())
        # Per parameter (by id: tensors compare elementwise, so they cannot be weak keys):
        # its buffer arrays by slot keys. Building one costs more than a small tensor's step.
        self._arrays: dict[int, tuple[weakref.ref, dict]] = {}

    def usable(self) -> bool:
        """Whether the kernels can step this optimizer's parameters at all: a built-in
        policy, built-in storage and the library (built or loaded here on first use)."""
        return self.family is not None and self.backends_ok and native.library() is not None

    @staticmethod
    def takes(item: ParamStep) -> bool:
        """Whether the kernels take this parameter's step (after :meth:`usable`): a
        contiguous float32 CPU parameter (or DTensor shard) with gradients like it."""
        p = local(item.param)
        if not _plain_ok(p):
            return False
        numel = p.numel()
        for g in item.grads:
            g = local(g)
            if not _plain_ok(g) or g.numel() != numel:
                return False
        return True

    def step_many(self, policy: SharingPolicy, items: Sequence[ParamStep]) -> list[ParamStep]:
        """Run the kernels on ``items`` (each one :meth:`takes`), in one call per number of
        objectives; returns the items they declined (nothing changed for those: unusual
        layouts such as different 8-bit block sizes)."""
        lib = native.library()
        assert lib is not None and self.family is not None, "step_many() before usable()"
        declined: list[ParamStep] = []
        batches: dict[int, list[tuple[ParamStep, ctypes.Array]]] = {}
        for item in items:
            array = self._buffers(Rule.of(policy, len(item.objectives)), item)
            if array is None:
                declined.append(item)
            else:
                batches.setdefault(len(item.objectives), []).append((item, array))
        scalars: dict[tuple[float, ...], ctypes.Array] = {}
        for batch in batches.values():
            for item, _ in batch:
                if item.scalars not in scalars:
                    scalars[item.scalars] = native.scalar_array(list(item.scalars))
            done = native.step_many(
                lib, self.family, [local(item.param) for item, _ in batch],
                [[local(g) for g in item.grads] for item, _ in batch],
                [array for _, array in batch], [scalars[item.scalars] for item, _ in batch])
            declined.extend(item for (item, _), ok in zip(batch, done) if not ok)
        return declined

    def _buffers(self, rule: Rule, item: ParamStep) -> ctypes.Array | None:
        p, state = item.param, item.state
        pid = id(p)
        entry = self._arrays.get(pid)
        if entry is None or entry[0]() is not p:
            entry = self._arrays[pid] = (weakref.ref(p, lambda _: self._arrays.pop(pid, None)),
                                         {})
        cached = entry[1].get(item.objectives)
        if cached is not None and _still_valid(cached[0], state):
            return cached[1]
        bufs, refs = [], []
        for spec, objective in rule.slots(item.objectives):
            key = spec.key(objective)
            backend = self.storage[spec.role]
            if isinstance(backend, Int8Storage) and backend.quantizes(p):
                names = (part_key(key, "codes"), part_key(key, "absmax"))
                codes, absmax = state[names[0]], state[names[1]]
                if not (codes.is_contiguous() and absmax.is_contiguous()):
                    return None
                buf = native.int8_buffer(codes, absmax, backend.qmap(spec.signed),
                                         backend.block_size)
            else:
                names = (key,)
                value = local(state[key])  # fp32 state of a DTensor parameter is a DTensor
                if not value.is_contiguous() or value.dtype not in (torch.float32,
                                                                    torch.bfloat16):
                    return None
                buf = (native.f32_buffer(value) if value.dtype == torch.float32
                       else native.bf16_buffer(value))
            refs.extend((name, weakref.ref(state[name])) for name in names)
            bufs.append(buf)
        array = native.buffer_array(bufs)
        entry[1][item.objectives] = (refs, array)
        return array
