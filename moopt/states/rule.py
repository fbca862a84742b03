"""How a policy's declaration becomes the step of one parameter: host scalars, buffer slots
and the elementwise rule shared by every path (reference, fused eager, compiled, native).

A step involves ``count`` objectives (1 in alternating mode; the objectives with a gradient
for this parameter in joint mode, with weights ``a_k`` normalised over them).

Buffer *slots*, in this order: the shared buffers (declaration order), then for each
objective in turn its per-objective buffers (declaration order).

The *scalar vector* (computed in float64 on the host, rounded once to the compute dtype):
``[decay, a_1 .. a_count, term_1 .. term_n]`` with one *term* block
``[scale, coefficient_1 .. coefficient_C]`` per update the policy runs: one per objective
(scale ``a_k lr_k``; alternating: ``lr``), or a single one for a ``"mix"`` joint step
(scale ``sum_k a_k lr_k``). ``decay = 1 - lr_step * weight_decay`` with
``lr_step = sum_k a_k lr_k``. Coefficients follow the names ``coefficients`` returns.

The rule (:meth:`Rule.apply`): ``update = sum_terms scale * direction`` (in term order),
per-objective buffers take their objective's new value, shared buffers the ``a_k``-weighted
sum of the terms' new values (a single term's value as it is), and the caller moves the
parameter to ``p * decay - update``. With one objective this is exactly the alternating step.

Example:
    >>> import torch
    >>> from moopt.states.policy import get_policy
    >>> from moopt.states.rule import Rule
    >>> rule = Rule.of(get_policy("decoupled"), count=2)
    >>> [f"{spec.name}/{k}" for spec, k in rule.slots(("a", "b"))]
    ['m/a', 'v/a', 'm/b', 'v/b']
    >>> rule.scalar_count
    21
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from torch import Tensor

from moopt.states.policy import BufferSpec, SharingPolicy, StepInfo, record_type


class Rule:
    """One policy's step over ``count`` objectives (see the module docstring). Everything
    derived from the declaration is worked out here, once, so that tracing :meth:`apply`
    (torch.compile) sees plain attributes."""

    def __init__(self, policy: SharingPolicy, count: int) -> None:
        self.policy = policy
        self.count = count
        self.shared: tuple[BufferSpec, ...] = policy.shared_buffers()
        self.own: tuple[BufferSpec, ...] = policy.own_buffers()
        self.buffer_names = frozenset(spec.name for spec in policy.buffers)
        self.State = record_type("State", tuple(spec.name for spec in policy.buffers))
        # Set by the first step's coefficients (a policy may read custom hyperparameters of
        # its param group, which no sample step has).
        self.coefficient_names: tuple[str, ...] = ()
        self.Coef: type | None = None
        # Whether the declaration lists shared buffers before per-objective ones (then the
        # state record takes the slot values positionally).
        self.shared_first = policy.buffers == (*self.shared, *self.own)

    @classmethod
    def of(cls, policy: SharingPolicy, count: int) -> Rule:
        cache = policy.__dict__.setdefault("_moopt_rules", {})
        if count not in cache:
            cache[count] = cls(policy, count)
        return cache[count]

    @property
    def mixes(self) -> bool:
        """Whether the step runs once on the mixed gradient (a "mix" joint step)."""
        return self.policy.joint_mode == "mix" and self.count > 1

    @property
    def terms(self) -> int:
        return 1 if self.mixes else self.count

    @property
    def scalar_count(self) -> int:
        self._ensure_names()
        return 1 + self.count + self.terms * (1 + len(self.coefficient_names))

    def _ensure_names(self) -> None:
        if self.Coef is None:
            self._learn_names(self.policy.coefficient_names())

    def _learn_names(self, names: tuple[str, ...]) -> None:
        for name in names:
            if not (isinstance(name, str) and name.isidentifier() and not name.startswith("_")):
                raise ValueError(f"policy {self.policy.label()!r}: coefficient name {name!r} "
                                 "must be a Python identifier not starting with '_'")
        self.coefficient_names = names
        self.Coef = record_type("Coef", names)

    def slots(self, objectives: Sequence[str]) -> list[tuple[BufferSpec, str | None]]:
        """(buffer, objective or None) per slot, for the objectives taking part."""
        if len(objectives) != self.count:
            raise ValueError(f"rule for {self.count} objectives got {list(objectives)}")
        return ([(spec, None) for spec in self.shared]
                + [(spec, k) for k in objectives for spec in self.own])

    # -------------------------------------------------------------------- host scalars
    def scalars(self, objectives: Sequence[str], weights: Sequence[float],
                lrs: Sequence[float], weight_decay: float,
                info: Callable[[str | None], StepInfo]) -> tuple[float, ...]:
        """The scalar vector of one step, in float64. ``weights`` are the normalised a_k
        (alternating: ``[1.0]``), ``lrs`` the objectives' learning rates, ``info(k)`` the
        :class:`StepInfo` of objective k's term (``info(None)``: the mixed term)."""
        lr_step = sum(a * lr for a, lr in zip(weights, lrs))
        decay = 1.0 - lr_step * weight_decay if weight_decay != 0 else 1.0
        values = [decay, *(float(a) for a in weights)]
        terms = [(None, lr_step)] if self.mixes else \
            [(k, a * lr) for k, a, lr in zip(objectives, weights, lrs)]
        for k, scale in terms:
            coefs = self.policy.coefficients(info(k))
            if self.Coef is None:
                self._learn_names(tuple(coefs))
            if tuple(coefs) != self.coefficient_names:
                raise ValueError(f"policy {self.policy.label()!r}: coefficients() returned "
                                 f"{list(coefs)}, expected the names "
                                 f"{list(self.coefficient_names)} in that order (the same "
                                 "every step)")
            values.append(float(scale))
            values.extend(float(v) for v in coefs.values())
        return tuple(values)

    # ---------------------------------------------------------------------- the rule
    def apply(self, grads: Sequence[Tensor], values: Sequence[Tensor],
              s: Sequence[Tensor]) -> tuple[Tensor, list[Tensor | None]]:
        """``(update, new values by slot)`` from the gradients (one per objective), the
        buffers' current values by slot and the scalar vector ``s`` (unbound 0-d tensors or
        floats). A slot whose buffer the policy did not return is None (unchanged). The
        vector comes from :meth:`scalars` (which learns the coefficients' names)."""
        self._ensure_names()
        n_shared, n_own = len(self.shared), len(self.own)
        weights = s[1:1 + self.count]
        width = 1 + len(self.coefficient_names)
        shared_new: list[Tensor | None] = [None] * n_shared
        own_new: list[Tensor | None] = []
        update = None
        for term in range(self.terms):
            block = s[1 + self.count + term * width:1 + self.count + (term + 1) * width]
            if self.mixes:
                grad = grads[0] * weights[0]
                for g, a in zip(grads[1:], weights[1:]):
                    grad = grad + g * a
            else:
                grad = grads[term]
            own = values[n_shared + term * n_own:n_shared + (term + 1) * n_own]
            state = self.State(*values[:n_shared], *own) if self.shared_first else \
                self.State(**self._by_name(values[:n_shared], own))
            direction, new = self.policy.update(grad, state, self.Coef(*block[1:]))
            self._check_returned(new)
            step = block[0] * direction
            update = step if update is None else update + step
            own_new.extend(new.get(spec.name) for spec in self.own)
            for j, spec in enumerate(self.shared):
                if self.terms == 1:
                    shared_new[j] = new.get(spec.name)
                    continue
                part = new.get(spec.name, values[j]) * weights[term]
                shared_new[j] = part if shared_new[j] is None else shared_new[j] + part
        return update, [*shared_new, *own_new]

    def _by_name(self, shared: Sequence[Tensor], own: Sequence[Tensor]) -> dict[str, Tensor]:
        return {**{spec.name: v for spec, v in zip(self.shared, shared)},
                **{spec.name: v for spec, v in zip(self.own, own)}}

    def _check_returned(self, new: Mapping[str, Tensor]) -> None:
        if not isinstance(new, Mapping):
            raise TypeError(f"policy {self.policy.label()!r}: update() must return "
                            f"(direction, {{buffer: value}}), got {type(new).__name__} second")
        unknown = [name for name in new if name not in self.buffer_names]
        if unknown:
            raise KeyError(f"policy {self.policy.label()!r}: update() returned {unknown}, which "
                           f"are not its buffers {[s.name for s in self.policy.buffers]}")
