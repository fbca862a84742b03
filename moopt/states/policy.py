"""Sharing policies: which optimizer-state buffers exist and how one step updates them.

A policy declares its buffers (:class:`BufferSpec`) and implements the per-tensor update of
one parameter — the readable reference, float64-exact. The optimizer does everything that is
common to every policy: validation, counters, weight decay, dtype handling, storage, and
dispatch.

Contract of the reference path
------------------------------
``alternating(param, grad, state, ctx)`` and ``joint(param, grads, state, ctx)`` receive:

* ``param``: the parameter in the compute dtype (float32, or float64 for float64
  parameters), weight decay already applied. Update it in place.
* ``grad`` / ``grads``: the gradient(s) in the compute dtype. In joint mode ``grads`` maps
  each objective that has a gradient for this parameter to that gradient.
* ``state``: a :class:`BufferView`. ``state["m"]`` is buffer ``m`` — for a per-objective
  buffer, the driving objective's copy (alternating); ``state.of("m", k)`` names the
  objective. Values are compute-dtype tensors; update them in place, or assign a new tensor
  with ``state["m"] = value``. The optimizer stores them back through the storage backend.
* ``ctx``: a :class:`StepContext` (learning rates, betas, counters already incremented...).

Fast paths
----------
A policy may also implement ``fast_step(batch: GroupBatch) -> bool``: the whole step of a
list of parameters at once (weight decay included, counters already incremented). It returns
``False`` when it cannot take the batch (e.g. an unsupported storage backend or tensor type);
the optimizer then runs the reference path for that batch. Tests must hold every fast path
equal to the reference path.

The built-in policies (exactly these classes, not subclasses, whose math may differ) delegate
to ``moopt.states.fast.dispatch(kind, batch) -> bool`` with ``kind`` one of ``"shared"``,
``"decoupled"``, ``"bridged"``; it is imported lazily on the first step and returns False for
anything it does not handle (its absence means no fast path).

Example (a complete custom policy; also in docs/extending.md):
    >>> import torch, moopt
    >>> from moopt.states.policy import BufferSpec, SharingPolicy
    >>> @moopt.register_policy("signsgd_momentum", overwrite=True)
    ... class SignMomentum(SharingPolicy):
    ...     buffers = (BufferSpec("m", per_objective=True, signed=True, role="delta"),)
    ...     def alternating(self, param, grad, state, ctx):
    ...         state["m"].mul_(ctx.betas[0]).add_(grad, alpha=1 - ctx.betas[0])
    ...         param.add_(state["m"].sign(), alpha=-ctx.lr)
    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = moopt.MultiObjectiveOptimizer([p], objectives=["a", "b"],
    ...                                     policy="signsgd_momentum", lr=0.1)
    >>> p.grad = torch.ones(3); opt.step(objective="a")
    >>> p.detach()
    tensor([0.9000, 0.9000, 0.9000])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from moopt.base.registry import Registry, decorator_for

ROLES = ("shared", "base", "delta")


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
        if not self.name or "/" in self.name or "#" in self.name:
            raise ValueError(f"buffer name {self.name!r} must be non-empty without '/' or '#'")

    def key(self, objective: str | None) -> str:
        """The state-dict key of this buffer (for ``objective`` if per-objective)."""
        return f"{self.name}/{objective}" if self.per_objective else self.name


@dataclass
class StepContext:
    """Everything a policy's per-tensor update needs besides tensors.

    Alternating mode: ``objective`` drives the step, ``lr`` is its learning rate
    (``group lr * lr_ratio``) and ``t_k`` its counter. Joint mode: ``objective`` is None and
    ``lrs`` / ``weights`` (normalised over the objectives present) describe every objective.
    Counters are already incremented for this step: ``T`` counts all steps of the parameter,
    ``t[k]`` the steps objective ``k`` took part in.
    """

    T: int
    t: dict[str, int]
    lrs: dict[str, float]
    betas: tuple[float, float]
    base_betas: tuple[float, float]
    eps: float
    guard: float
    unit_roundoff: float
    objective: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    group: Mapping[str, Any] = field(default_factory=dict)

    @property
    def lr(self) -> float:
        """Learning rate of the driving objective (alternating mode)."""
        if self.objective is None:
            raise RuntimeError("ctx.lr is only defined in alternating mode; use ctx.lrs[k]")
        return self.lrs[self.objective]

    @property
    def t_k(self) -> int:
        """Counter of the driving objective (alternating mode)."""
        if self.objective is None:
            raise RuntimeError("ctx.t_k is only defined in alternating mode; use ctx.t[k]")
        return self.t[self.objective]


class BufferView:
    """Read/write access to one parameter's buffers in the compute dtype.

    Reads go through the storage backend once and are cached; :meth:`commit` writes every
    buffer that was read back through its backend (a no-op for aliasing fp32 storage).
    """

    def __init__(
        self,
        specs: Mapping[str, BufferSpec],
        read: Callable[[BufferSpec, str | None], Tensor],
        write: Callable[[BufferSpec, str | None, Tensor], None],
        objective: str | None,
    ) -> None:
        self._specs = specs
        self._read = read
        self._write = write
        self._objective = objective
        self._cache: dict[tuple[str, str | None], Tensor] = {}

    def _slot(self, name: str, objective: str | None) -> tuple[BufferSpec, str | None]:
        try:
            spec = self._specs[name]
        except KeyError:
            raise KeyError(f"policy has no buffer {name!r}; buffers: {list(self._specs)}") from None
        if not spec.per_objective:
            return spec, None
        if objective is None:
            raise KeyError(f"buffer {name!r} is per objective: use state.of({name!r}, objective)")
        return spec, objective

    def of(self, name: str, objective: str | None) -> Tensor:
        spec, obj = self._slot(name, objective)
        key = (name, obj)
        if key not in self._cache:
            self._cache[key] = self._read(spec, obj)
        return self._cache[key]

    def set(self, name: str, objective: str | None, value: Tensor) -> None:
        spec, obj = self._slot(name, objective)
        self._cache[(name, obj)] = value

    def __getitem__(self, name: str) -> Tensor:
        return self.of(name, self._objective)

    def __setitem__(self, name: str, value: Tensor) -> None:
        self.set(name, self._objective, value)

    def commit(self) -> None:
        for (name, obj), value in self._cache.items():
            self._write(self._specs[name], obj, value)
        self._cache.clear()


@dataclass
class GroupBatch:
    """The input of a policy's optional ``fast_step``: one step of many parameters.

    ``params`` are the parameters themselves (any dtype); ``grads`` their gradients
    (alternating) and ``joint_grads`` maps objective -> list of gradients or None (joint).
    ``states`` are the raw per-parameter state dicts (buffers stored as parts under
    ``"<key>"`` / ``"<key>#<part>"``); ``contexts`` the per-parameter :class:`StepContext`
    (counters already incremented); ``storage`` maps role -> backend; ``weight_decay`` is
    the group's decoupled weight decay, still to be applied by the fast path.
    ``reference(i)``, when given, steps parameter ``i`` through the reference path (weight
    decay included): a fast path may hand it the parameters it cannot take.
    """

    params: list[Tensor]
    grads: list[Tensor] | None
    joint_grads: dict[str, list[Tensor | None]] | None
    states: list[dict[str, Any]]
    contexts: list[StepContext]
    storage: Mapping[str, Any]
    weight_decay: float
    reference: Callable[[int], None] | None = None


class SharingPolicy:
    """Base class of sharing policies; subclass, declare ``buffers``, implement updates."""

    name: ClassVar[str] = ""
    buffers: ClassVar[tuple[BufferSpec, ...]] = ()

    @classmethod
    def roles(cls) -> tuple[str, ...]:
        """The storage roles this policy's buffers use, in declaration order."""
        return tuple(dict.fromkeys(spec.role for spec in cls.buffers))

    @classmethod
    def buffer_specs(cls) -> dict[str, BufferSpec]:
        return {spec.name: spec for spec in cls.buffers}

    def alternating(self, param: Tensor, grad: Tensor, state: BufferView,
                    ctx: StepContext) -> None:
        """Reference update of one parameter for a step driven by ``ctx.objective``."""
        raise NotImplementedError(f"policy {self.name or type(self).__name__!r} "
                                  "does not implement alternating mode")

    def joint(self, param: Tensor, grads: Mapping[str, Tensor], state: BufferView,
              ctx: StepContext) -> None:
        """Reference update of one parameter with every objective's gradient at once."""
        raise NotImplementedError(f"policy {self.name or type(self).__name__!r} "
                                  "does not implement joint mode")

    def fast_step(self, batch: GroupBatch) -> bool:
        """Optional multi-tensor path; return False to fall back to the reference path."""
        return False

    def config(self) -> dict[str, Any]:
        """Constructor arguments (saved in state_dict, checked on load)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def builtin_fast_step(policy: SharingPolicy, cls: type, kind: str, batch: GroupBatch) -> bool:
    """Delegate a built-in policy's fast path to ``moopt.states.fast.dispatch``."""
    if type(policy) is not cls:  # a subclass may change the math: reference path only
        return False
    try:
        from moopt.states.fast import dispatch
    except ImportError:
        return False
    return dispatch(kind, batch)


POLICIES: Registry[type[SharingPolicy]] = Registry("sharing policy")
_register = decorator_for(POLICIES)


def register_policy(name: str, *, overwrite: bool = False):
    """Class decorator registering a :class:`SharingPolicy` subclass under ``name``."""

    def add(cls: type[SharingPolicy]) -> type[SharingPolicy]:
        if not (isinstance(cls, type) and issubclass(cls, SharingPolicy)):
            raise TypeError(f"register_policy({name!r}) expects a SharingPolicy subclass, "
                            f"got {cls!r}")
        if not cls.buffers:
            raise ValueError(f"policy {name!r} declares no buffers")
        cls.name = name
        return _register(name, overwrite=overwrite)(cls)

    return add


def get_policy(spec: str | SharingPolicy) -> SharingPolicy:
    """A policy instance from a registered name or an instance."""
    if isinstance(spec, SharingPolicy):
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
