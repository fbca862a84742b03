"""``MultiObjectiveOptimizer``: one torch optimizer, N objectives, a pluggable sharing policy.

Example (alternating mode, the papers' setting):
    >>> import torch, moopt
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = moopt.MultiObjectiveOptimizer(model.parameters(), objectives=["forget", "retain"],
    ...                                     policy="bridged", lr=1e-2)
    >>> x = torch.randn(8, 4)
    >>> for name in moopt.schedules.Alternating({"forget": 1, "retain": 5}).take(6):
    ...     loss = model(x).pow(2).mean() * (-1 if name == "forget" else 1)
    ...     loss.backward(); opt.step(objective=name); opt.zero_grad()
    >>> opt.state[model.weight]["T"], opt.state[model.weight]["t/retain"]
    (6, 5)

Joint mode (every objective's gradient in one step):
    >>> loss_f, loss_r = -model(x).mean(), model(x).pow(2).mean()
    >>> opt.backward({"forget": loss_f, "retain": loss_r}); opt.step(); opt.zero_grad()
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from moopt import state_format as fmt
from moopt import validation as check
from moopt.errors import NonFiniteGradientError, StateMismatchError
from moopt.states.fast import native
from moopt.states.fast.stepper import FastPath
from moopt.states.layout import buffer_of, counter_key
from moopt.states.policy import BufferSpec, SharingPolicy, StepInfo, get_policy, normalized
from moopt.states.reference import ParamStep, reference_step
from moopt.states.rule import Rule
from moopt.states.storage import StorageBackend, compute_dtype, resolve_storage

NONFINITE_MODES = ("raise", "skip", "ignore")


class MultiObjectiveOptimizer(Optimizer):
    """An Adam-family optimizer whose state is shared between objectives by a policy.

    Args:
        params: parameters or param groups, as for any ``torch.optim`` optimizer.
        objectives: the N >= 1 unique objective names.
        policy: ``"shared"``, ``"decoupled"``, ``"bridged"``, a registered name, or an
            instance of :class:`~moopt.states.policy.SharingPolicy`.
        storage: a backend name (``"fp32"``, ...) or ``{role: name}`` per role
            (``"base"``, ``"delta"``, ``"shared"``; ``"default"`` for the rest).
        lr: learning rate; objective k uses ``lr * lr_ratios[k]``.
        betas: (b1, b2) of shared, decoupled and delta states.
        base_betas: (b3, b4) of the bridged base state.
        eps: added to the denominator.
        weight_decay: decoupled (AdamW-style) weight decay, applied first in every step.
        lr_ratios: per-objective learning-rate ratios; missing names default to 1.0.
        bridge_guard: the bridged cancellation guard: a floor on ``|v_k^ + v_b^|`` in units
            of its rounding error, plus, with lossy (bf16, int8) storage, a bound of 3
            learning rates on each bridged direction (see :mod:`moopt.states.bridged`); 0
            disables both.
        nonfinite: what a step does with NaN/inf gradients. ``"ignore"`` (default) does
            not look, like ``torch.optim``: a NaN or inf flows into the parameters and state.
            ``"raise"`` raises :class:`~moopt.errors.NonFiniteGradientError` and ``"skip"``
            skips the whole step; both read every gradient before writing anything, so
            nothing is written to parameters or state, at the cost of that extra read (a
            sixth to a fifth of a fused AdamW step on a CPU, docs/benchmarks.md).
        fast_path: step parameters through the fused paths derived from the policy's
            declaration (default): the native CPU kernels of the built-in policies, else the
            compiled (or eager) fused function; :meth:`kernel_report` says which ran. With
            False every parameter takes the readable per-tensor reference path.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        objectives: Iterable[str],
        policy: str | SharingPolicy = "bridged",
        storage: str | StorageBackend | Mapping[str, str | StorageBackend] = "fp32",
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        base_betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        lr_ratios: Mapping[str, float] | None = None,
        bridge_guard: float = 8.0,
        nonfinite: str = "ignore",
        fast_path: bool = True,
    ) -> None:
        self.objectives = check.check_objectives(objectives)
        self.policy = get_policy(policy)
        self.policy_name = self.policy.label()
        self.storage = resolve_storage(storage, self.policy.roles())
        self._specs: dict[str, BufferSpec] = self.policy.buffer_specs()
        if nonfinite not in NONFINITE_MODES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.fast_path = bool(fast_path)
        self._fast = FastPath(self.policy, self.storage) if self.fast_path else None
        self._reference_paths: dict[int, dict[str, Any]] = {}
        self._scalar_cache: dict[tuple, tuple[float, ...]] = {}
        self.skipped_steps = 0
        self._joint_grads: dict[str, dict[Tensor, Tensor]] = {}
        defaults = dict(lr=lr, betas=tuple(betas), base_betas=tuple(base_betas), eps=eps,
                        weight_decay=weight_decay, lr_ratios=lr_ratios,
                        bridge_guard=bridge_guard)
        check.check_group(defaults, self.objectives)
        defaults["lr_ratios"] = check.complete_lr_ratios(lr_ratios, self.objectives)
        super().__init__(params, defaults)

    # ----------------------------------------------------------------- param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        check.check_params(params)
        merged = {**self.defaults, **group}
        check.check_group(merged, self.objectives)
        if "lr_ratios" in group:
            group["lr_ratios"] = check.complete_lr_ratios(group["lr_ratios"], self.objectives)
        for key in ("betas", "base_betas"):
            if key in group:
                group[key] = tuple(group[key])
        group["params"] = params
        super().add_param_group(group)

    # ----------------------------------------------------------------- gradients
    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear ``.grad`` and any per-objective gradients stashed for joint mode."""
        self._joint_grads.clear()
        super().zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def stash_grads(self, objective: str) -> None:
        """Move the current ``.grad`` of every parameter into ``objective``'s joint gradients.

        Calling it again for the same objective accumulates (gradient accumulation).
        """
        check.check_objective(objective, self.objectives)
        bucket = self._joint_grads.setdefault(objective, {})
        for p in self._all_params():
            if p.grad is None:
                continue
            if p in bucket:
                bucket[p].add_(p.grad)
            else:
                bucket[p] = p.grad
            p.grad = None

    def backward(self, losses: Mapping[str, Tensor], *, retain_graph: bool = False) -> None:
        """Joint mode: back-propagate each objective's loss separately, keeping the gradients
        apart for the next :meth:`step`. Losses may share one forward graph.

        Under DDP, only the first backward of a forward pass is all-reduced: there, run one
        forward and backward per objective and call :meth:`stash_grads` after each (see
        docs/distributed.md). FSDP2 and ``moopt.distributed.average_gradients`` are fine.
        """
        if not isinstance(losses, Mapping) or not losses:
            raise ValueError(f"backward() needs a non-empty mapping objective -> loss, "
                             f"got {losses!r}")
        for name, loss in losses.items():
            check.check_objective(name, self.objectives)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"loss of objective {name!r} must be a scalar tensor, "
                                 f"got {loss!r}")
        held = [i for i, p in enumerate(self._all_params()) if p.grad is not None]
        if held:
            raise RuntimeError(f"backward(): parameters {held[:5]} already hold .grad; call "
                               "zero_grad() first (joint mode keeps gradients per objective)")
        items = list(losses.items())
        for i, (name, loss) in enumerate(items):
            loss.backward(retain_graph=retain_graph or i < len(items) - 1)
            self.stash_grads(name)

    # ----------------------------------------------------------------- stepping
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, objective: str | None = None,
             weights: Mapping[str, float] | None = None) -> Any:
        """One optimizer step.

        Alternating mode: ``step(objective=name)`` with gradients in ``.grad``.
        Joint mode: after :meth:`backward` (or :meth:`stash_grads`), ``step(weights=...)``.
        With a single objective, ``step()`` alone is alternating mode for it.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._joint_grads:
            if objective is not None:
                raise ValueError(f"step(objective={objective!r}) was called while joint-mode "
                                 "gradients from backward() are pending; call step() without "
                                 "objective, or zero_grad() first")
            self._joint_step(check.check_weights(weights, self.objectives))
            return loss
        if weights is not None:
            raise ValueError("weights apply to joint mode only (after opt.backward(...))")
        if objective is None:
            if len(self.objectives) != 1:
                raise ValueError("step() needs objective=<name> (alternating mode; one of "
                                 f"{list(self.objectives)}) or gradients from backward() "
                                 "(joint mode)")
            objective = self.objectives[0]
        check.check_objective(objective, self.objectives)
        self._alternating_step(objective)
        return loss

    @staticmethod
    def _grads_finite(grads: list[Tensor]) -> bool:
        """True when no gradient holds NaN or inf: one pass over the gradients, one host sync.

        Contiguous float32 CPU gradients go through the native scan of the exponent bits
        (:mod:`moopt.states.fast.native`) when it is built. The rest use the 2-norm, which is
        NaN or inf when an entry is and is several times cheaper than the max-norm on CPU; its
        only false alarm (a sum of squares overflowing) is settled by an exact check.
        """
        # Only gradients the native scan takes start its build.
        lib = native.library() if any(native.scannable(g) for g in grads) else None
        flags = [g.isfinite().all() for g in grads if type(g) is not Tensor]
        by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
        for g in grads:
            if type(g) is not Tensor:
                continue
            if lib is not None and native.scannable(g):
                if not native.all_finite(lib, g):
                    return False
                continue
            by_kind.setdefault((g.device, g.dtype), []).append(g)
        for tensors in by_kind.values():
            norms = torch._foreach_norm(tensors, 2)
            flags.append(torch.stack(norms).isfinite().all())
        if not flags or bool(torch.stack([f.cpu() for f in flags]).all()):
            return True
        return all(bool(g.isfinite().all()) for g in grads)

    def _refuse_nonfinite(self, what: str) -> None:
        if self.nonfinite == "raise":
            self._joint_grads.clear()
            raise NonFiniteGradientError(
                f"{what} holds NaN or inf; nothing was changed. Pass nonfinite='skip' to skip "
                "such steps instead")
        self.skipped_steps += 1
        self._joint_grads.clear()

    def _alternating_step(self, objective: str) -> None:
        work = []
        all_grads: list[Tensor] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("moopt does not support sparse gradients")
            grads = [p.grad for p in params]
            all_grads.extend(grads)
            if params:
                work.append((group, params, grads))
        if self.nonfinite != "ignore" and not self._grads_finite(all_grads):
            self._refuse_nonfinite(f"a gradient of objective {objective!r}")
            return
        for group, params, grads in work:
            items = []
            for p, g in zip(params, grads):
                state = self._state_of(p)
                state["T"] += 1
                state[counter_key(objective)] += 1
                items.append(ParamStep(p, [g], (objective,),
                                       self._scalars(group, state, p, (objective,), (1.0,)),
                                       state))
            self._run(group, items)

    def _joint_step(self, weights: dict[str, float]) -> None:
        pending = {k: grads for k, grads in self._joint_grads.items() if weights[k] > 0}
        all_grads = [g for grads in pending.values() for g in grads.values()]
        if self.nonfinite != "ignore" and not self._grads_finite(all_grads):
            self._refuse_nonfinite(f"a gradient of objectives {sorted(pending)}")
            return
        for group in self.param_groups:
            items = []
            for p in group["params"]:
                present = tuple(k for k in self.objectives if k in pending and p in pending[k])
                if not present:
                    continue
                state = self._state_of(p)
                state["T"] += 1
                for k in present:
                    state[counter_key(k)] += 1
                a = normalized(weights, present)
                items.append(ParamStep(p, [pending[k][p] for k in present], present,
                                       self._scalars(group, state, p, present,
                                                     tuple(a[k] for k in present)),
                                       state))
            if items:
                self._run(group, items)
        self._joint_grads.clear()

    def _run(self, group: dict[str, Any], items: list[ParamStep]) -> None:
        """Step ``items`` (one param group) through the fast path, or the reference path."""
        index = next(i for i, g in enumerate(self.param_groups) if g is group)
        if self._fast is not None:
            self._fast.step(index, items, self._reference)
            return
        for item in items:
            self._reference(item)
        self._reference_paths[index] = {
            "reference": {"params": len(items), "why": {"fast_path=False"}}}

    def _reference(self, item: ParamStep) -> None:
        reference_step(Rule.of(self.policy, len(item.objectives)), item, self.storage)

    def _state_of(self, p: Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state.update(fmt.new_state(p, self._specs, self.objectives, self.storage))
        return state

    def _scalars(self, group: dict[str, Any], state: dict[str, Any], p: Tensor,
                 objectives: tuple[str, ...], weights: tuple[float, ...]) -> tuple[float, ...]:
        """The rule's scalar vector of one parameter's step, in float64 (parameters with the
        same counters, weights and storage precision share it; computed once per step)."""
        u = max(backend.unit_roundoff(p) for backend in self.storage.values())
        dtype = compute_dtype(p)
        counters = tuple(state[counter_key(k)] for k in objectives)
        key = (id(group), state["T"], counters, objectives, weights, u, dtype)
        cached = self._scalar_cache.get(key)
        if cached is not None:
            return cached
        ratios = group["lr_ratios"]

        def info(k: str | None) -> StepInfo:
            return StepInfo(T=state["T"], t=None if k is None else state[counter_key(k)],
                            objective=k, betas=group["betas"], base_betas=group["base_betas"],
                            eps=group["eps"], guard=group["bridge_guard"], unit_roundoff=u,
                            dtype=dtype, group=group)

        values = Rule.of(self.policy, len(objectives)).scalars(
            objectives, weights, [group["lr"] * ratios[k] for k in objectives],
            group["weight_decay"], info)
        if len(self._scalar_cache) > 64:  # one step's worth is all that is ever reused
            self._scalar_cache.clear()
        self._scalar_cache[key] = values
        return values

    # ----------------------------------------------------------------- checkpoints
    def _meta(self) -> dict[str, Any]:
        return {
            "format": 1,
            "objectives": list(self.objectives),
            "policy": self.policy_name,
            "policy_config": self.policy.config(),
            "storage": fmt.describe_storage(self.storage),
            "skipped_steps": self.skipped_steps,
        }

    def check_meta(self, meta: Mapping[str, Any], source: str) -> None:
        """Raise StateMismatchError unless ``meta`` (a saved ``moopt`` entry) records this
        optimizer's objectives, policy and storage; ``source`` names it in the message.
        Compared as JSON, so a round trip through a file (tuples become lists) still fits."""
        mine = json.loads(json.dumps(self._meta()))
        for key, label in (("objectives", "objectives"), ("policy", "policy"),
                           ("policy_config", "policy settings"), ("storage", "storage")):
            if json.loads(json.dumps(meta.get(key))) != mine[key]:
                raise StateMismatchError(f"{source} has {label} {meta.get(key)!r}, this "
                                         f"optimizer has {mine[key]!r}")

    def state_dict(self) -> dict[str, Any]:
        """torch's layout (``state`` by parameter index, ``param_groups``) plus a ``moopt``
        entry recording objectives, policy and storage, checked by :meth:`load_state_dict`."""
        sd = super().state_dict()
        sd["moopt"] = self._meta()
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state saved by a MultiObjectiveOptimizer with the same objectives, policy and
        storage. Everything is checked before anything changes; state keeps its stored dtype."""
        meta = state_dict.get("moopt") if isinstance(state_dict, Mapping) else None
        if not isinstance(meta, Mapping):
            raise StateMismatchError("not a moopt optimizer state_dict (no 'moopt' entry); it "
                                     "may come from another torch optimizer")
        self.check_meta(meta, "saved state")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise StateMismatchError(f"saved state has {len(saved_groups)} param groups, this "
                                     f"optimizer has {len(self.param_groups)}")
        index_to_param: dict[int, Tensor] = {}
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise StateMismatchError(f"param group {gi}: saved state has "
                                         f"{len(saved['params'])} parameters, this optimizer "
                                         f"has {len(group['params'])}")
            index_to_param.update(zip(saved["params"], group["params"]))
            check.check_group({**group, **{k: v for k, v in saved.items() if k != "params"}},
                              self.objectives)
        new_state: dict[Tensor, dict[str, Any]] = {}
        for index, saved_state in state_dict["state"].items():
            if index not in index_to_param:
                raise StateMismatchError(f"saved state names parameter {index}, which no "
                                         "param group holds")
            p = index_to_param[index]
            fmt.check_saved_state(index, p, saved_state, self._specs, self.objectives,
                                  self.storage)
            # Distributed (DTensor) state arrives already placed; plain state follows its param.
            device = None if hasattr(p, "device_mesh") else p.device
            new_state[p] = {k: fmt.clone_state(v, device) for k, v in saved_state.items()}
        # Everything checked: now replace.
        for saved, group in zip(saved_groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if key in ("betas", "base_betas") else value
        self.state.clear()
        self.state.update(new_state)
        self.skipped_steps = int(meta.get("skipped_steps", 0))
        self._joint_grads.clear()

    # ----------------------------------------------------------------- introspection
    def memory_report(self) -> dict[str, Any]:
        """Bytes of optimizer state: ``total_bytes``, ``by_role``, ``by_objective`` (shared
        buffers under ``"shared"``), ``num_params`` and ``bytes_per_param``. Quantization
        metadata (e.g. 8-bit block scales) is counted."""
        by_role = dict.fromkeys(self.policy.roles(), 0)
        by_objective = dict.fromkeys((*self.objectives, "shared"), 0)
        total = 0
        for state in self.state.values():
            for key, value in state.items():
                if not isinstance(value, Tensor):
                    continue
                name, objective = buffer_of(key)
                nbytes = fmt.tensor_bytes(value)
                total += nbytes
                by_role[self._specs[name].role] += nbytes
                by_objective[objective or "shared"] += nbytes
        num_params = sum(fmt.tensor_bytes(p) // p.element_size() for p in self._all_params())
        return {
            "total_bytes": total,
            "by_role": by_role,
            "by_objective": by_objective,
            "num_params": num_params,
            "bytes_per_param": total / num_params if num_params else 0.0,
        }

    def kernel_report(self) -> list[dict[str, Any]]:
        """Which path stepped each param group's parameters in the last step that touched
        the group: one entry per (group, path) with ``"group"`` (index), ``"path"``
        (``"native"``, ``"compiled"``, ``"eager"`` or ``"reference"``), ``"params"`` (how
        many) and ``"why"`` (for ``"eager"`` and ``"reference"``: the reasons, joined).

        Example:
            >>> import torch, moopt
            >>> p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
            >>> opt = moopt.MultiObjectiveOptimizer([p], ["a"], fast_path=False)
            >>> p.grad = torch.ones(3, dtype=torch.float64); opt.step()
            >>> opt.kernel_report()
            [{'group': 0, 'path': 'reference', 'params': 1, 'why': 'fast_path=False'}]
        """
        last = self._fast.last if self._fast is not None else self._reference_paths
        return [{"group": group, "path": path, "params": entry["params"],
                 "why": "; ".join(sorted(entry["why"]))}
                for group, paths in sorted(last.items()) for path, entry in paths.items()]

    def __repr__(self) -> str:
        storage = ", ".join(f"{role}={b.name or type(b).__name__}"
                            for role, b in self.storage.items())
        lines = [f"{type(self).__name__}(policy={self.policy_name!r}, storage=({storage}), "
                 f"objectives={list(self.objectives)}"]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
