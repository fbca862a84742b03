"""The fast path behind ``SharingPolicy.fast_step`` for shared, decoupled and bridged.

For every parameter of a batch it runs one fused update of the policy:

* float32 parameters on the CPU: the native C kernel (:mod:`moopt.states.fast.native`),
  which reads and writes float32, bfloat16 and 8-bit state directly, once it is built
  (about a second, in the background, cached on disk); DTensor (FSDP2) parameters step
  their local shards this way when the kernel takes every parameter of the batch;
* otherwise the per-tensor kernels of :mod:`moopt.states.fast.kernels`, compiled
  (:mod:`moopt.states.fast.compiled`) for tensors of at least ``COMPILE_MIN_NUMEL`` values
  once the build is ready, eager before that; 8-bit buffers are dequantized before and
  re-quantized after them; non-contiguous tensors go through contiguous copies.

Joint mode runs on the native kernels only (float32 CPU parameters): shared steps once on
the weighted gradient; decoupled steps each objective's state in turn; bridged steps each
objective's delta against the same base read, then feeds the base the weighted gradient sums.

Where it cannot take a batch it returns False before touching anything and the optimizer
runs the reference path: joint mode without the native kernels, DTensor parameters the
native kernel cannot take (on a GPU, or without a compiler; in joint mode, any), storage
backends it does not know (custom ones, bf16 with stochastic rounding).

Example:
    >>> import torch, moopt
    >>> from moopt.states.fast import with_fast_path
    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = moopt.MultiObjectiveOptimizer([p], ["a", "b"], with_fast_path("bridged"), lr=0.1)
    >>> p.grad = torch.ones(3); opt.step(objective="a")
    >>> p.detach()
    tensor([0.9000, 0.9000, 0.9000])
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import weakref

import torch
from torch import Tensor

from moopt.states.bf16 import BF16Storage
from moopt.states.bridged import guard_settings
from moopt.states.fast import compiled, native
from moopt.states.fast.kernels import (
    adam_scalar_values,
    bridged_kernel,
    bridged_scalar_values,
    shared_kernel,
)
from moopt.states.fast.tensors import is_distributed, local
from moopt.states.int8 import Int8Storage
from moopt.states.policy import GroupBatch, StepContext
from moopt.states.shared import BOUND_SLACK, adam_step_bound
from moopt.states.storage import FP32Storage, StorageBackend, compute_dtype

# Compile only where it pays: smaller tensors are dominated by per-call overhead.
COMPILE_MIN_NUMEL = 1 << 16

# (buffer name, per objective, signed) per policy, in kernel argument order.
LAYOUTS: dict[str, tuple[tuple[str, bool, bool], ...]] = {
    "shared": (("m", False, True), ("v", False, False)),
    "decoupled": (("m", True, True), ("v", True, False)),
    "bridged": (("m_base", False, True), ("v_base", False, False),
                ("m", True, True), ("v", True, True)),
}
ROLES = {"shared": ("shared", "shared"), "decoupled": ("delta", "delta"),
         "bridged": ("base", "base", "delta", "delta")}


def _supported(backend: StorageBackend) -> bool:
    if type(backend) is FP32Storage or type(backend) is Int8Storage:
        return True
    return type(backend) is BF16Storage and not backend.stochastic_rounding


def _bound(step: int, betas: tuple[float, float]) -> float:
    """The reference path's clip of Adam-like directions (moopt.states.shared)."""
    bound = adam_step_bound(step, betas) * BOUND_SLACK
    return bound if math.isfinite(bound) else math.inf


def _scalars(policy: str, ctx: StepContext, decay: float,
             dtype: torch.dtype = torch.float32) -> list[float]:
    """The kernel scalars of one step (``dtype``: the compute dtype)."""
    if policy == "bridged":
        # The floor and the lossy-storage step bound of moopt.states.bridged.
        floor, bound = guard_settings(ctx.guard, ctx.unit_roundoff, dtype)
        return bridged_scalar_values(decay=decay, lr=ctx.lr, betas=ctx.betas,
                                     base_betas=ctx.base_betas, T=ctx.T, t_k=ctx.t_k,
                                     eps=ctx.eps, guard_u=floor, bound=bound)
    step = ctx.T if policy == "shared" else ctx.t_k
    return adam_scalar_values(decay=decay, lr=ctx.lr, betas=ctx.betas, step=step, eps=ctx.eps,
                              bound=_bound(step, ctx.betas))


def _kernel(policy: str):
    return bridged_kernel if policy == "bridged" else shared_kernel


def _stand_ins(args: tuple):
    """A function making small inputs of the kinds of ``args`` (for the background build)."""
    n = 2048

    def small(t: Tensor) -> Tensor:
        return torch.zeros(n, dtype=t.dtype, device=t.device)

    def make() -> tuple:
        return (small(args[0]), small(args[1]), *[(small(b[0]),) for b in args[2:-2]],
                args[-2], args[-1].clone())

    return make


def _compiled_for(policy: str, args: tuple, kinds: tuple[str, ...]):
    p, g = args[0], args[1]
    if (p.numel() < COMPILE_MIN_NUMEL or p.dtype == torch.float64
            or p.device.type not in ("cpu", "cuda")):
        return None
    key = (policy, kinds, p.dtype, g.dtype, p.device.type,
           tuple(b[0].dtype for b in args[2:-2]))
    return compiled.get(key, _kernel(policy), _stand_ins(args))


def fast_step(policy: str, batch: GroupBatch) -> bool:
    """Run one step of ``policy`` on every parameter of ``batch``; False if it cannot (then
    nothing was changed)."""
    if policy not in LAYOUTS:
        return False
    backends = [batch.storage[r] for r in ROLES[policy]]
    if not all(_supported(b) for b in backends):
        return False
    if batch.grads is None:
        return _joint_step(policy, batch, backends)
    layout = LAYOUTS[policy]
    lib = native.library()
    keys_of = [_keys(layout, ctx.objective) for ctx in batch.contexts]
    distributed = any(is_distributed(p) or is_distributed(g)
                      for p, g in zip(batch.params, batch.grads))
    if distributed and not _native_takes_all(lib, policy, batch, keys_of, backends, layout):
        return False
    backend_key = _backend_key(backends)
    # Parameters of a group share their step scalars unless their counters differ.
    shared_scalars: dict[tuple, tuple[list[float], ctypes.Array | None]] = {}
    for p, g, state, ctx, keys in zip(batch.params, batch.grads, batch.states, batch.contexts,
                                      keys_of):
        decay = _decay(ctx.lr, batch.weight_decay)
        skey = (ctx.T, ctx.t_k, ctx.lr, ctx.unit_roundoff, decay, compute_dtype(p))
        if skey not in shared_scalars:
            values = _scalars(policy, ctx, decay, compute_dtype(p))
            array = native.scalar_array(values) if lib is not None else None
            shared_scalars[skey] = (values, array)
        scalars, scalar_array = shared_scalars[skey]
        if lib is not None and _native_update(lib, policy, p, g, state, keys, backends,
                                              layout, scalar_array, backend_key):
            continue
        s = torch.tensor(scalars, dtype=compute_dtype(p), device=p.device)
        _update(policy, p, g, state, keys, backends, layout, s)
    return True


def _keys(layout, objective: str | None) -> list[str]:
    """State keys of a policy's buffers: per-objective ones as ``name/objective``."""
    return [f"{name}/{objective}" if per_obj else name for name, per_obj, _ in layout]


def _decay(lr: float, weight_decay: float) -> float:
    """The decoupled weight-decay factor a step multiplies the parameter by."""
    return 1 - lr * weight_decay if weight_decay != 0 else 1.0


def _joint_step(policy: str, batch: GroupBatch, backends: list) -> bool:
    """One joint step (docs/concepts.md, joint mode) on the native kernels, or False before anything
    is written if some parameter, gradient or buffer is not one they take.

    Per parameter, with a_k the normalised weights of the objectives present and
    lr_joint = sum_k a_k lr_k (weight decay uses it, once):
    shared: one Adam step on sum_k a_k g_k with lr_joint; decoupled: objective k's Adam step
    with a_k lr_k, in turn; bridged: objective k's delta step with a_k lr_k against the base
    (read, not written), in turn, then the base update from sum_k a_k g_k and
    sum_k a_k g_k^2. The kernels form the weighted sums piece by piece (no temporary tensors);
    the parameter takes the objectives' steps one after another instead of their sum. Both
    differ from the reference path by roundings only.
    """
    lib = native.library()
    if lib is None or batch.joint_grads is None:
        return False
    layout = LAYOUTS[policy]
    backend_key = _backend_key(backends)
    plans = [_joint_plan(policy, p, state, {k: batch.joint_grads[k][i] for k in ctx.weights},
                         backends, layout, backend_key)
             for i, (p, state, ctx) in enumerate(zip(batch.params, batch.states,
                                                     batch.contexts))]
    # Parameters the kernels cannot take go through the reference path, if the optimizer
    # offers it; everything is decided before the first write.
    if all(plan is None for plan in plans) or (batch.reference is None and None in plans):
        return False
    for i, (p, ctx, plan) in enumerate(zip(batch.params, batch.contexts, plans)):
        if plan is None:
            batch.reference(i)
        else:
            _joint_update(lib, policy, p.detach(), plan[0], ctx, plan[1], batch.weight_decay)
    return True


def _joint_plan(policy, p, state, grads, backends, layout, backend_key):
    """(gradients, buffer arrays) of one parameter's joint step on the native kernels, or
    None if they cannot take it."""
    if is_distributed(p) or not all(g is not None and not is_distributed(g)
                                    and _native_ok(p.detach(), g) for g in grads.values()):
        return None
    if len({b.block_size for b in backends
            if isinstance(b, Int8Storage) and b.quantizes(p)}) > 1:
        return None  # the kernel needs one block size
    arrays = {}
    for k in (list(grads) if policy != "shared" else [None]):
        arrays[k] = _native_buffers(policy, p, state, _keys(layout, k), backends, layout,
                                    backend_key)
    if policy == "bridged":
        arrays["#base"] = _native_buffers("bridged#base", p, state, ["m_base", "v_base"],
                                          backends[:2], layout[:2], backend_key)
    if any(a is None for a in arrays.values()):
        return None
    return grads, arrays


def _joint_update(lib, policy: str, p: Tensor, grads: dict[str, Tensor], ctx: StepContext,
                  arrays: dict, weight_decay: float) -> None:
    weights = ctx.weights
    lr_joint = sum(weights[k] * ctx.lrs[k] for k in weights)
    decay = _decay(lr_joint, weight_decay)

    def alone(k: str, lr: float) -> StepContext:  # objective k's step, alternating-style
        return dataclasses.replace(ctx, objective=k, lrs={**ctx.lrs, k: lr})

    names, gs = list(grads), list(grads.values())
    factors = [weights[k] for k in names]
    done = True
    if policy == "shared":
        done = native.step_mixed(lib, "adam", p, gs, factors, arrays[None],
                                 _scalars("shared", alone(names[0], lr_joint), decay))
    else:
        family = "adam" if policy == "decoupled" else "delta"
        for i, (k, g) in enumerate(grads.items()):
            scalars = _scalars(policy, alone(k, weights[k] * ctx.lrs[k]),
                               decay if i == 0 else 1.0)
            done = done and native.step(lib, family, p, g, arrays[k], scalars)
        if policy == "bridged" and done:
            done = native.step_mixed(lib, "base", None, gs, factors, arrays["#base"],
                                     _scalars("bridged", alone(names[0], 0.0), 1.0))
    if not done:  # checked before the first write: only an allocation can fail here
        raise MemoryError("moopt: the native kernel could not allocate its scratch in the "
                          "middle of a joint step")


def _native_takes_all(lib, policy, batch, keys_of, backends, layout) -> bool:
    """For DTensor (FSDP2) parameters: the update is elementwise, so the native kernel can
    step each process's local shard, provided it takes every parameter of the batch; this
    is decided before anything is written (otherwise the reference path runs)."""
    backend_key = _backend_key(backends)
    return lib is not None and all(
        _native_ok(local(p), local(g))
        and _native_buffers(policy, p, state, keys, backends, layout, backend_key) is not None
        for p, g, state, keys in zip(batch.params, batch.grads, batch.states, keys_of))


def _native_ok(p: Tensor, g: Tensor) -> bool:
    """Whether the native kernel takes this (local) parameter and gradient."""
    return (p.device.type == "cpu" and p.dtype == torch.float32 and g.dtype == torch.float32
            and p.is_contiguous() and g.is_contiguous() and p.numel() == g.numel())


# Per parameter: the native call's buffer arrays, reused while the state holds the very same
# tensors (a new optimizer or load_state_dict puts new ones there, and the array is rebuilt).
# Building them costs more than the kernel for small tensors.
# Keyed by id: tensors compare elementwise, so they cannot be weak dictionary keys.
_plans: dict[int, tuple[weakref.ref, dict]] = {}


def _still_valid(refs: list[tuple[str, weakref.ref]], state: dict) -> bool:
    """Whether every tensor a cached buffer array points into is alive and still the state's
    tensor under its key (a missing key with a dead reference is not a match: the array
    would point into freed memory)."""
    for key, ref in refs:
        tensor = ref()
        if tensor is None or state.get(key) is not tensor:
            return False
    return True


def _backend_key(backends) -> tuple:
    """What identifies a batch's storage backends in the buffer-array cache."""
    return tuple((type(b), id(b)) for b in backends)


def _native_buffers(policy, p, state, keys, backends, layout, backend_key):
    """The kernel's buffer array for ``p``'s state under ``keys``, or None if a buffer is of a
    kind the kernel does not take."""
    pid = id(p)
    entry = _plans.get(pid)
    if entry is None or entry[0]() is not p:
        entry = _plans[pid] = (weakref.ref(p, lambda _: _plans.pop(pid, None)), {})
    per_param = entry[1]
    cache_key = (policy, tuple(keys), backend_key)
    plan = per_param.get(cache_key)
    if plan is not None and _still_valid(plan[0], state):
        return plan[1]
    bufs, refs = [], []
    for key, backend, (_, _, signed) in zip(keys, backends, layout):
        if isinstance(backend, Int8Storage) and backend.quantizes(p):
            parts = (key + "#codes", key + "#absmax")
            codes, absmax = state[parts[0]], state[parts[1]]
            if not (codes.is_contiguous() and absmax.is_contiguous()):
                return None
            buf = native.int8_buffer(codes, absmax, backend.qmap(signed), backend.block_size)
        else:
            parts = (key,)
            value = local(state[key])  # fp32 state of a DTensor parameter is a DTensor
            if not value.is_contiguous() or value.dtype not in (torch.float32, torch.bfloat16):
                return None
            buf = (native.f32_buffer(value) if value.dtype == torch.float32
                   else native.bf16_buffer(value))
        refs.extend((k, weakref.ref(state[k])) for k in parts)
        bufs.append(buf)
    array = native.buffer_array(bufs)
    per_param[cache_key] = (refs, array)
    return array


def _native_update(lib, policy, p, g, state, keys, backends, layout, scalars,
                   backend_key) -> bool:
    """One parameter (its local shard, for a DTensor) through the native CPU kernel; False
    (nothing changed) if it cannot."""
    p_local, g_local = local(p.detach()), local(g.detach())
    if not _native_ok(p_local, g_local):
        return False
    array = _native_buffers(policy, p, state, keys, backends, layout, backend_key)
    if array is None:
        return False
    family = "bridged" if policy == "bridged" else "adam"
    return native.step(lib, family, p_local, g_local, array, scalars)


def _update(policy, p, g, state, keys, backends, layout, s) -> None:
    """One parameter: 8-bit buffers dequantized to float32 temporaries, the kernel (compiled
    where it pays, else eager) on flat views, temporaries re-quantized."""
    bufs, temps = [], []
    for key, backend, (_, _, signed) in zip(keys, backends, layout):
        if isinstance(backend, Int8Storage) and backend.quantizes(p):
            parts = {"codes": state[key + "#codes"], "absmax": state[key + "#absmax"]}
            value = backend.read(parts, p, signed=signed).reshape(-1)
            temps.append((backend, parts, signed, value))
            bufs.append(value)
        else:
            bufs.append(state[key])
    contiguous = p.is_contiguous() and all(b.is_contiguous() for b in bufs)
    work = p.detach().view(-1) if contiguous else p.detach().reshape(-1).clone()
    flat = [b.view(-1) if contiguous else b.reshape(-1).clone() for b in bufs]
    kinds = tuple("plain" for _ in flat)
    args = (work, g.detach().reshape(-1), *[(b,) for b in flat], kinds, s)
    kernel = _compiled_for(policy, args, kinds) or _kernel(policy)
    kernel(*args)
    if not contiguous:
        p.detach().copy_(work.view(p.shape))
        for b, new in zip(bufs, flat):
            b.copy_(new.view(b.shape))
    for backend, parts, signed, value in temps:
        backend.write(parts, value, signed=signed)
