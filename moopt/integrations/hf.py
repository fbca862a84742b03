"""moopt inside Hugging Face ``transformers.Trainer`` (``pip install moopt[llm]``).

:class:`MultiObjectiveTrainer` is a ``Trainer`` whose optimizer is a
:class:`~moopt.MultiObjectiveOptimizer`. Give it one data source per objective and a
schedule; every optimizer step takes ``gradient_accumulation_steps`` micro-batches of the
objective the schedule names and ends with ``step(objective=name)``. Everything else is
the Trainer's: LR schedulers (the optimizer's ``lr`` is the group's, so they just work),
gradient clipping, mixed precision, logging, checkpoints and ``resume_from_checkpoint``
(the optimizer state, with its per-objective buffers, is saved in ``optimizer.pt``).

Example:
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments
    >>> from moopt.integrations.hf import MultiObjectiveTrainer
    >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=8, n_embd=8, n_layer=1,
    ...                                    n_head=2, bos_token_id=0, eos_token_id=0))
    >>> ids = torch.randint(0, 32, (4, 8), generator=torch.Generator().manual_seed(0))
    >>> data = {"forget": [{"input_ids": ids[:2], "labels": ids[:2]}],
    ...         "retain": [{"input_ids": ids[2:], "labels": ids[2:]}]}
    >>> args = TrainingArguments(output_dir="/tmp/moopt-doc", max_steps=3, use_cpu=True,
    ...                          report_to=[], save_strategy="no", learning_rate=1e-3,
    ...                          disable_tqdm=True, logging_strategy="no")
    >>> trainer = MultiObjectiveTrainer(
    ...     model=model, args=args, objective_data=data, schedule={"forget": 1, "retain": 2},
    ...     loss_fns={"forget": lambda m, b: -m(**b).loss, "retain": lambda m, b: m(**b).loss},
    ...     optimizer_kwargs={"policy": "bridged"})
    >>> _ = trainer.train()  # doctest: +ELLIPSIS
    {'train_runtime': ...}
    >>> trainer.objective_log
    ['forget', 'retain', 'retain']
    >>> trainer.moopt_optimizer.memory_report()["bytes_per_param"]  # 2 + 2N fp32 buffers
    24.0
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from moopt.integrations.stream import OBJECTIVE_KEY, ObjectiveStream
from moopt.optimizer import MultiObjectiveOptimizer

LossFn = Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor]


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("moopt.integrations.hf needs transformers: pip install moopt[llm]"
                          ) from exc
    return transformers


class ScheduledOptimizer(MultiObjectiveOptimizer):
    """A :class:`~moopt.MultiObjectiveOptimizer` whose plain ``step()`` uses
    :attr:`next_objective`, for training loops that call ``optimizer.step()`` without
    arguments (HF Trainer, accelerate). Explicit ``objective=`` still wins."""

    next_objective: str | None = None

    def step(self, closure: Callable[[], Any] | None = None, *, objective: str | None = None,
             weights: Mapping[str, float] | None = None) -> Any:
        if objective is None and not self._joint_grads and len(self.objectives) > 1:
            if self.next_objective is None:
                raise RuntimeError("ScheduledOptimizer.step(): no objective given and "
                                   "next_objective is not set")
            objective = self.next_objective
        return super().step(closure, objective=objective, weights=weights)


def _default_loss(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return model(**batch).loss


def _trainer_class() -> type:
    transformers = _transformers()

    class MultiObjectiveTrainer(transformers.Trainer):
        """``transformers.Trainer`` driving a :class:`~moopt.MultiObjectiveOptimizer`.

        Args (besides the Trainer's; ``train_dataset`` is not used):
            objective_data: objective -> a ``DataLoader`` or any re-iterable of dict batches,
                or a ``Dataset`` (batched with ``per_device_train_batch_size`` and the
                trainer's ``data_collator``, in order; sharded across ranks under DDP).
            schedule: which objective drives each optimizer step, e.g.
                ``{"forget": 1, "retain": 5}`` or ``"round_robin"``.
            loss_fns: objective -> ``fn(model, batch) -> scalar loss``; missing objectives
                use ``model(**batch).loss``.
            optimizer_kwargs: extra arguments of the optimizer (``policy``, ``storage``,
                ``betas``, ``lr_ratios``...). ``lr``, ``weight_decay`` (not on biases and
                norms, as the Trainer does), ``eps`` and ``betas`` default to the
                TrainingArguments.
        """

        def __init__(self, *args: Any, objective_data: Mapping[str, Any], schedule: Any,
                     loss_fns: Mapping[str, LossFn] | None = None,
                     optimizer_kwargs: Mapping[str, Any] | None = None,
                     **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if not isinstance(objective_data, Mapping) or not objective_data:
                raise ValueError("objective_data must map each objective to its data, got "
                                 f"{objective_data!r}")
            unknown = sorted(set(loss_fns or {}) - set(objective_data))
            if unknown:
                raise ValueError(f"loss_fns names objectives without data: {unknown}; "
                                 f"objectives are {sorted(objective_data)}")
            self.objective_data = dict(objective_data)
            self.objectives = list(self.objective_data)
            self.schedule_spec = schedule
            self.loss_fns = {k: (loss_fns or {}).get(k, _default_loss) for k in self.objectives}
            self.optimizer_kwargs = dict(optimizer_kwargs or {})
            self.objective_log: list[str] = []
            # Our losses are per-micro-batch means: let the Trainer divide by the number of
            # accumulation steps (it skips that when it believes the model scaled the loss).
            self.model_accepts_loss_kwargs = False
            # Fail now, not at the first step, on a bad schedule.
            ObjectiveStream({k: [] for k in self.objectives}, schedule)

        # ------------------------------------------------------------- optimizer
        def create_optimizer(self, model: torch.nn.Module | None = None) -> Any:
            if self.optimizer is not None:
                return self.optimizer
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
            args = self.args
            kw = {"lr": args.learning_rate, "eps": args.adam_epsilon,
                  "betas": (args.adam_beta1, args.adam_beta2), **self.optimizer_kwargs}
            wd = kw.pop("weight_decay", args.weight_decay)
            groups = [{"params": [p for n, p in named if n in decay], "weight_decay": wd},
                      {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
            groups = [g for g in groups if g["params"]]
            self.optimizer = ScheduledOptimizer(groups, objectives=self.objectives, **kw)
            return self.optimizer

        @property
        def moopt_optimizer(self) -> ScheduledOptimizer:
            """The :class:`~moopt.MultiObjectiveOptimizer` itself (created if needed), for
            ``memory_report()``, ``state_dict()``... Once training starts,
            ``trainer.optimizer`` is accelerate's wrapper around it."""
            if self.optimizer is None:
                self.create_optimizer()
            return getattr(self.optimizer, "optimizer", self.optimizer)

        # ------------------------------------------------------------- data
        def _loader(self, name: str) -> Iterable[Any]:
            data = self.objective_data[name]
            if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__getitem__") \
                    and hasattr(data, "__len__"):
                sampler = None
                if self.args.world_size > 1:
                    sampler = torch.utils.data.DistributedSampler(
                        data, num_replicas=self.args.world_size,
                        rank=self.args.process_index, shuffle=False)
                return torch.utils.data.DataLoader(
                    data, batch_size=self.args.per_device_train_batch_size,
                    collate_fn=self.data_collator, sampler=sampler, shuffle=False)
            return data

        def get_train_dataloader(self) -> torch.utils.data.DataLoader:
            # Each objective's loader draws from a generator of its own (seeded by
            # args.seed): a restarted loader then leaves dropout's random numbers alone, and
            # resume_from_checkpoint is exact (see moopt.integrations.stream).
            stream = ObjectiveStream({k: self._loader(k) for k in self.objectives},
                                     self.schedule_spec,
                                     accumulation=self.args.gradient_accumulation_steps,
                                     seed=self.args.seed)
            return torch.utils.data.DataLoader(stream, batch_size=None)

        # ------------------------------------------------------------- loss
        def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any],
                         return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            inputs = dict(inputs)
            name = inputs.pop(OBJECTIVE_KEY, None)
            if name is None:  # evaluation batches carry no tag
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                opt = self.optimizer
                inner = getattr(opt, "optimizer", opt)  # accelerate wraps the optimizer
                if self._micro % self.args.gradient_accumulation_steps == 0:
                    self.objective_log.append(name)  # first micro-batch of an optimizer step
                inner.next_objective = name
                self._micro += 1
            loss = self.loss_fns[name](model, inputs)
            return (loss, None) if return_outputs else loss

        _micro = 0

        def train(self, *args: Any, **kwargs: Any) -> Any:
            self._micro = 0
            return super().train(*args, **kwargs)

    return MultiObjectiveTrainer


def __getattr__(name: str) -> Any:
    # The Trainer subclass is built on first use so importing this module needs no
    # transformers until then.
    if name == "MultiObjectiveTrainer":
        cls = _trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
