"""Sharing policies, declared once: their buffers and their elementwise update in torch ops.

A policy is a :class:`SharingPolicy` subclass with three parts:

* ``buffers``: its state buffers (:class:`BufferSpec`: name, one copy per objective or one
  shared copy, signed or not, storage role);
* ``coefficients(info)``: every scalar the update multiplies by, computed on the host in
  float64 from a :class:`StepInfo` (counters and hyperparameters) and returned by name;
* ``update(grad, state, coef)``: one objective's step in elementwise torch ops. ``state``
  holds the buffers' current values (``state.m``; a per-objective buffer is the stepping
  objective's copy) and ``coef`` the coefficients as 0-d tensors (``coef.b1``). It returns
  ``(direction, new_values)``: the parameter moves by ``-lr * direction`` (after weight
  decay), and ``new_values`` maps buffer names to their new values (buffers it leaves out
  keep theirs). It must not modify its inputs in place.

Everything else derives from that declaration: the reference path, the fused path
(compiled, every storage and device), the native CPU kernels' argument tables, state keys,
checkpoints, memory accounting and distributed layouts (:mod:`moopt.states.rule` says how).

Joint mode (every objective's gradient in one step, weights ``a_k`` normalised over the
objectives present) follows ``joint_mode``:

* ``"average"`` (default): every objective takes its step from the same read of the state;
  its per-objective buffers keep their results, the shared buffers take
  ``sum_k a_k new_k`` and the parameter ``-sum_k a_k lr_k direction_k``;
* ``"mix"``: one step on the mixed gradient ``sum_k a_k g_k`` with ``lr = sum_k a_k lr_k``.

Write coefficients such as ``1 - beta`` in ``coefficients`` (float64), not in ``update``:
there a tensor scalar would round beta to float32 first.

Example (a complete policy; ``examples/custom_policy.py`` trains one):
    >>> import torch, moopt
    >>> from moopt.states.policy import BufferSpec, SharingPolicy
    >>> @moopt.register_policy("signsgd_momentum", overwrite=True)
    ... class SignMomentum(SharingPolicy):
    ...     buffers = (BufferSpec("m", per_objective=True, signed=True, role="delta"),)
    ...     def coefficients(self, info):
    ...         b1 = info.betas[0]
    ...         return {"b1": b1, "a1": 1 - b1}
    ...     def update(self, grad, state, coef):
    ...         m = state.m * coef.b1 + grad * coef.a1
    ...         return m.sign(), {"m": m}
    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = moopt.MultiObjectiveOptimizer([p], objectives=["a", "b"],
    ...                                     policy="signsgd_momentum", lr=0.1)
    >>> p.grad = torch.ones(3); opt.step(objective="a")
    >>> p.detach()
    tensor([0.9000, 0.9000, 0.9000])
    >>> POLICIES.unregister("signsgd_momentum")  # (keeps the registry as it was)
"""

from __future__ import annotations

import collections
import functools
import keyword
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from moopt.base.registry import Registry, decorator_for

ROLES = ("shared", "base", "delta")
JOINT_MODES = ("average", "mix")


def _identifier(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
            or name.startswith("_"):
        raise ValueError(f"{kind} name {name!r} must be a Python identifier not starting "
                         "with '_' (it is read as an attribute, e.g. state.m)")
    return name


@dataclass(frozen=True)
class BufferSpec:
    """One state buffer of a policy.

    ``per_objective``: one copy per objective (key ``"<name>/<objective>"``) or a single one.
    ``signed``: whether values can be negative (8-bit storage picks its map by this).
    ``role``: ``"shared"``, ``"base"`` or ``"delta"``; storage can be chosen per role.
    """

    name: str
    per_objective: bool
    signed: bool
    role: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"buffer {self.name!r}: role {self.role!r} is not one of {ROLES}")
        _identifier("buffer", self.name)

    def key(self, objective: str | None) -> str:
        """The state-dict key of this buffer (for ``objective`` if per-objective)."""
        return f"{self.name}/{objective}" if self.per_objective else self.name


@dataclass(frozen=True)
class StepInfo:
    """What a policy's ``coefficients`` may depend on, for one objective's step.

    ``T`` counts the parameter's steps and ``t`` the stepping objective's (both already
    incremented for this step). In a ``"mix"`` joint step no single objective steps:
    ``objective`` and ``t`` are None. ``group`` is the parameter group (any custom
    hyperparameter a policy reads), ``guard`` the group's ``bridge_guard`` and
    ``unit_roundoff`` the largest relative rounding error of the parameter's storage, and
    ``dtype`` the compute dtype (float32, or float64 for float64 parameters).
    """

    T: int
    t: int | None
    objective: str | None
    betas: tuple[float, float]
    base_betas: tuple[float, float]
    eps: float
    guard: float
    unit_roundoff: float
    dtype: torch.dtype = torch.float32
    group: Mapping[str, Any] = field(default_factory=dict, compare=False)


SAMPLE_INFO = StepInfo(T=3, t=2, objective="sample", betas=(0.9, 0.95), base_betas=(0.9, 0.95),
                       eps=1e-8, guard=8.0, unit_roundoff=2.0**-24)


@functools.cache
def record_type(kind: str, names: tuple[str, ...]) -> type:
    """A named tuple type with fields ``names`` (what ``update`` gets as state and coef;
    torch.compile traces named tuples without graph breaks)."""
    return collections.namedtuple(kind, names)


class SharingPolicy:
    """Base class of sharing policies: declare ``buffers``, ``coefficients`` and ``update``."""

    name: ClassVar[str] = ""
    buffers: ClassVar[tuple[BufferSpec, ...]] = ()
    joint_mode: ClassVar[str] = "average"

    def coefficients(self, info: StepInfo) -> dict[str, float]:
        """The scalars ``update`` multiplies by, in float64, by name (the same names every
        step)."""
        raise NotImplementedError(f"policy {self.label()!r} does not declare coefficients()")

    def update(self, grad: Tensor, state: Any, coef: Any) -> tuple[Tensor, Mapping[str, Tensor]]:
        """One objective's elementwise step: ``(direction, {buffer: new value})``."""
        raise NotImplementedError(f"policy {self.label()!r} does not declare update()")

    def config(self) -> dict[str, Any]:
        """Constructor arguments (saved in state_dict, checked on load). Policies with the
        same class and config must compute the same update (compiled kernels are shared)."""
        return {}

    # ------------------------------------------------------------- derived from the buffers
    def label(self) -> str:
        return self.name or type(self).__name__

    @classmethod
    def roles(cls) -> tuple[str, ...]:
        """The storage roles this policy's buffers use, in declaration order."""
        return tuple(dict.fromkeys(spec.role for spec in cls.buffers))

    @classmethod
    def buffer_specs(cls) -> dict[str, BufferSpec]:
        return {spec.name: spec for spec in cls.buffers}

    @classmethod
    def shared_buffers(cls) -> tuple[BufferSpec, ...]:
        return tuple(spec for spec in cls.buffers if not spec.per_objective)

    @classmethod
    def own_buffers(cls) -> tuple[BufferSpec, ...]:
        return tuple(spec for spec in cls.buffers if spec.per_objective)

    def coefficient_names(self) -> tuple[str, ...]:
        """The names ``coefficients`` returns on a sample step (the native kernels' tables
        use it; the optimizer takes the names from the first real step)."""
        return tuple(self.coefficients(SAMPLE_INFO))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def check_declaration(cls: type, name: str) -> None:
    """Raise with a message naming the problem unless ``cls`` is a complete declaration."""
    if not (isinstance(cls, type) and issubclass(cls, SharingPolicy)):
        raise TypeError(f"register_policy({name!r}) expects a SharingPolicy subclass, got {cls!r}")
    if not cls.buffers:
        raise ValueError(f"policy {name!r} declares no buffers")
    names = [spec.name for spec in cls.buffers]
    if len(set(names)) != len(names):
        raise ValueError(f"policy {name!r} declares a buffer twice: {names}")
    if cls.joint_mode not in JOINT_MODES:
        raise ValueError(f"policy {name!r}: joint_mode {cls.joint_mode!r} is not one of "
                         f"{JOINT_MODES}")
    for method in ("coefficients", "update"):
        if getattr(cls, method) is getattr(SharingPolicy, method):
            raise TypeError(f"policy {name!r} must define {method}()")


POLICIES: Registry[type[SharingPolicy]] = Registry("sharing policy")
_register = decorator_for(POLICIES)


def register_policy(name: str, *, overwrite: bool = False):
    """Class decorator registering a :class:`SharingPolicy` subclass under ``name``."""

    def add(cls: type[SharingPolicy]) -> type[SharingPolicy]:
        check_declaration(cls, name)
        cls.name = name
        return _register(name, overwrite=overwrite)(cls)

    return add


def get_policy(spec: str | SharingPolicy) -> SharingPolicy:
    """A policy instance from a registered name or an instance."""
    if isinstance(spec, SharingPolicy):
        check_declaration(type(spec), spec.label())
        return spec
    if isinstance(spec, str):
        return POLICIES.get(spec)()
    raise TypeError(f"policy must be a registered name or a SharingPolicy, got {spec!r}")


def list_policies() -> list[str]:
    """Names of the registered sharing policies."""
    return POLICIES.names()


def normalized(weights: Mapping[str, float], present: Iterable[str]) -> dict[str, float]:
    """Weights of the ``present`` objectives divided by their sum."""
    chosen = {k: float(weights[k]) for k in present}
    total = sum(chosen.values())
    if total <= 0:
        raise ValueError(f"joint weights of the objectives present sum to {total}; need > 0")
    return {k: w / total for k, w in chosen.items()}
