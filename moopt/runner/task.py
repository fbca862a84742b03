"""The task-adapter interface: what a task must tell the generic runner.

A task (LLM unlearning, safety alignment, multi-task vision, your own) subclasses
:class:`TaskAdapter` and registers it in the ``moopt.tasks`` entry-point group of its
package. The runner then calls, for one run:

0. ``validate(cfg)``: cheap checks before anything is written (optional).
1. ``prepare(cfg, ctx)`` once: expensive setup that later runs can reuse (for example
   fine-tuning the target model), cached by the task under ``ctx.cache_dir``. Its return
   value is stored in ``ctx.prepared``. ``moopt compare`` calls it once for the whole grid,
   with the grid's base config, so every grid point starts from the same prepared model.
2. ``build(cfg, ctx) -> TrainingSetup``: a fresh model and, per objective, a loss function
   and a batch stream. Called once per run (each grid point gets its own).
3. The runner trains: an optimizer step is driven by one objective (alternating schedules)
   or by all of them (joint). ``evaluate(setup, cfg, ctx)`` is called every
   ``cfg.eval_every`` steps and at the end; it returns flat ``{metric: float}``.
4. ``report_extras(setup, cfg, ctx)`` may add sections (text, generated examples, extra
   plots) to the run's ``report.md``.
5. After a ``moopt compare`` grid, ``compare_extras(rows, base, out)`` may add sections to
   the comparison's ``report.md`` (a task's own side-by-side table, ranks, plots).

Everything random in ``build`` must come from ``cfg.seed`` (the runner seeds torch, numpy
and ``random`` before calling it) so that resume and comparison runs are reproducible.

Example (a complete two-objective task):
    >>> import torch
    >>> from moopt.runner import BatchStream, TrainObjective, RunConfig, TaskAdapter
    >>> from moopt.runner import TrainingSetup
    >>> class TwoTargets(TaskAdapter):
    ...     name = "two-targets"
    ...     presets = {"tiny": {"steps": 4, "lr": 0.1}}
    ...     tradeoff = ("loss_a", "loss_b")
    ...     def build(self, cfg, ctx):
    ...         model = torch.nn.Linear(2, 1)
    ...         xs = [torch.randn(4, 2) for _ in range(3)]
    ...         def loss_a(x):  # pull outputs to +1
    ...             return ((model(x) - 1) ** 2).mean()
    ...         def loss_b(x):  # pull outputs to -1
    ...             return ((model(x) + 1) ** 2).mean()
    ...         return TrainingSetup(model, {
    ...             "a": TrainObjective(loss_a, BatchStream(xs, seed=cfg.seed)),
    ...             "b": TrainObjective(loss_b, BatchStream(xs, seed=cfg.seed + 1)),
    ...         })
    ...     def evaluate(self, setup, cfg, ctx):
    ...         x = torch.ones(1, 2)
    ...         with torch.no_grad():
    ...             y = setup.model(x).item()
    ...         return {"loss_a": (y - 1) ** 2, "loss_b": (y + 1) ** 2}
    >>> TwoTargets.config_class is RunConfig
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from moopt.runner.config import RunConfig

if TYPE_CHECKING:
    import torch

    from moopt.runner.devices import Hardware


@dataclass
class TrainObjective:
    """One objective of a run: its loss and where its batches come from.

    ``loss(batch)`` returns a scalar tensor (lower is better) computed on the setup's model.
    ``batches`` is an endless iterator; when it has ``state_dict``/``load_state_dict`` (as
    :class:`~moopt.runner.data.BatchStream` does) its position is saved in checkpoints so
    that a resumed run sees the same batches. With ``batches=None`` the loss is called with
    no argument (full-batch objectives). ``weight`` is the objective's weight in joint mode.
    """

    loss: Callable[..., Tensor]
    batches: Iterator[Any] | None = None
    weight: float = 1.0

    def compute(self) -> Tensor:
        """The loss on the next batch (advances the batch stream)."""
        if self.batches is None:
            return self.loss()
        return self.loss(next(self.batches))


@dataclass
class TrainingSetup:
    """What ``TaskAdapter.build`` returns.

    ``params``: what to optimise; an iterable of tensors or of param-group dicts, or ``None``
    for every parameter of ``model`` with ``requires_grad``. ``steps_per_epoch``: how many
    optimizer steps make one epoch, needed when the config counts ``epochs``. ``stateful``:
    extra objects with ``state_dict``/``load_state_dict`` to save in checkpoints (an LR
    scheduler, say). ``extras``: anything the task wants to keep for ``evaluate`` (tokenizer,
    reference model, evaluation data).
    """

    model: nn.Module
    objectives: dict[str, TrainObjective]
    params: Iterable[Any] | None = None
    steps_per_epoch: int | None = None
    stateful: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ValueError("TrainingSetup needs at least one objective, got none")
        for name, spec in self.objectives.items():
            if not isinstance(spec, TrainObjective):
                raise TypeError(
                    f"objective {name!r} must be a TrainObjective, got {type(spec).__name__}"
                )


@dataclass
class ReportSection:
    """An extra section of ``report.md``: a title, markdown text and optional image files
    (paths relative to the run directory)."""

    title: str
    markdown: str = ""
    images: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """Run-time information the runner passes to every hook.

    ``run_dir``: where this run writes (``None`` when nothing is written, e.g. off rank 0).
    ``cache_dir``: where ``prepare`` may cache expensive artefacts across runs.
    ``prepared``: the return value of ``prepare``. ``is_main``: False on non-zero ranks of a
    distributed run; hooks must not write files then. ``timings``: seconds per stage, filled
    by :meth:`stage` and shown in the report. ``hardware``: the run's resolved device,
    precision and parallel mode (``None`` outside the runner); the runner places the
    setup's model itself, other modules a task builds (a frozen reference model) go
    through :meth:`place`, and tensors it makes for evaluation to :attr:`device`.
    """

    run_dir: Path | None
    cache_dir: Path
    prepared: Any = None
    is_main: bool = True
    timings: dict[str, float] = field(default_factory=dict)
    log_fn: Callable[[str], None] | None = None
    hardware: Hardware | None = None

    @property
    def device(self) -> torch.device:
        """The run's device (the CPU when no hardware was resolved)."""
        import torch

        return self.hardware.device if self.hardware is not None else torch.device("cpu")

    def place(self, module: nn.Module) -> nn.Module:
        """Move ``module`` to the run's device, in bfloat16 when ``precision`` is ``bf16``
        (in place, as ``Module.to``; returned for chaining)."""
        if self.hardware is None:
            return module
        import torch

        dtype = self.hardware.param_dtype
        return module.to(self.hardware.device, dtype if dtype != torch.float32 else None)

    def place_frozen(self, module: nn.Module) -> nn.Module:
        """Place a frozen module (a reference model) like the trained model: the run's
        weight dtype and device, sharded over the ranks under ``parallel: fsdp``
        (:func:`moopt.runner.placement.place_frozen`); its parameters stop requiring
        gradients. Without hardware (a context made outside a run) it is returned as is."""
        if self.hardware is None:
            return module
        from moopt.runner.placement import place_frozen

        return place_frozen(module, self.hardware)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (``with ctx.stage("finetune"): ...``); times add up per name."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    def log(self, message: str) -> None:
        """Print a progress message (main process only)."""
        if self.is_main:
            (self.log_fn or print)(message)


class TaskAdapter:
    """Base class of task adapters; see the module docstring for the life cycle.

    Class attributes:
        name: the task's name on the command line (``moopt run NAME``).
        description: one line for ``moopt list``.
        config_class: a subclass of :class:`RunConfig` adding the task's own fields (a
            ``--loss`` flag on the command line sets the field ``loss``).
        presets: named partial configs (``--preset smoke``), applied over the defaults.
        default_preset: the preset used when none is given (``None``: class defaults).
        tradeoff: the two metrics (x, y) plotted against each other by ``moopt compare``.
        report_metrics: metrics shown in comparison tables (``None``: all of them).
        higher_is_better: metric name -> direction, used to mark the best row in tables
            and to say "better"/"worse" in a comparison's claims.
        claim_metrics: metrics whose paired comparisons against the baseline configuration
            ``moopt compare`` tabulates in its report (``None``: the ``tradeoff`` pair);
            ``results.json`` holds the comparisons of every metric.
        compare_grid: a preset's default grid for ``moopt compare`` lives in the preset
            under the key ``"compare"`` (``{"policies": [...], "storages": [...], "lrs":
            [...], "seeds": [...], "axes": {field: [values]}, "baseline": [policy,
            storage]}``, where ``axes`` varies any further config fields, e.g. ``{"mode":
            ["alternating", "joint"]}``, and ``baseline`` is the configuration the report's
            claims compare every other one with); the command line overrides it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[type[RunConfig]] = RunConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    default_preset: ClassVar[str | None] = None
    tradeoff: ClassVar[tuple[str, str] | None] = None
    report_metrics: ClassVar[list[str] | None] = None
    higher_is_better: ClassVar[Mapping[str, bool]] = {}
    claim_metrics: ClassVar[list[str] | None] = None

    def validate(self, cfg: RunConfig) -> None:
        """Cheap checks of ``cfg`` (raise with a clear message), run before the run
        directory is touched, so a typo never leaves a half-made run behind."""

    def objective_names(self, cfg: RunConfig) -> list[str] | None:
        """The names of the objectives a run of ``cfg`` trains, when the config alone
        tells them (``None``: only :meth:`build` knows). Known names let ``schedule``,
        ``weights`` and ``lr_ratios`` be checked before anything runs (``--dry-run``
        included); they must equal the keys of the built ``TrainingSetup.objectives``."""
        return None

    def check(self, cfg: RunConfig) -> None:
        """What the runner checks before anything is built or written: :meth:`validate`,
        then the objective names of ``schedule``, ``weights`` and ``lr_ratios`` against
        :meth:`objective_names` where it knows them."""
        from moopt.runner.objective_keys import check_objective_keys

        self.validate(cfg)
        names = self.objective_names(cfg)
        if names is not None:
            check_objective_keys(cfg, names)

    def prepare(self, cfg: RunConfig, ctx: RunContext) -> Any:
        """Expensive, cacheable setup shared by runs; the result lands in ``ctx.prepared``."""
        return None

    def build(self, cfg: RunConfig, ctx: RunContext) -> TrainingSetup:
        """A fresh model, objectives and batch streams for one run."""
        raise NotImplementedError(f"task {self.name!r} does not implement build()")

    def evaluate(self, setup: TrainingSetup, cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
        """Flat ``{metric: float}`` of the current model (called with gradients enabled;
        wrap your own work in ``torch.no_grad()``; the runner restores train mode after)."""
        return {}

    def report_extras(
        self, setup: TrainingSetup, cfg: RunConfig, ctx: RunContext
    ) -> list[ReportSection]:
        """Optional extra report sections (written into ``ctx.run_dir``)."""
        return []

    def compare_extras(
        self, rows: list[dict[str, Any]], base: RunConfig, out: Path, *, plots: bool = True
    ) -> list[ReportSection]:
        """Optional sections of a comparison's ``report.md``, placed before its generic
        table. ``rows``: one per configuration and learning rate, with ``group``,
        ``policy``, ``storage``, ``lr``, the extra axes' values, ``n`` (seeds) and
        ``<metric>_mean`` / ``<metric>_std`` / ``<metric>_low`` / ``<metric>_high`` (the
        95 % bootstrap interval of the mean; ``None`` for one seed); keys added to a row (a
        rank, say) are kept in ``results.json``. Images go into ``out`` (paths in the
        sections relative to it); draw none when ``plots`` is False."""
        return []
