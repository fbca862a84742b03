"""``moopt run multitask-vision``: MultiMNIST (2 or 3 tasks) and CelebA (40 attributes).

Each task is one objective of the optimizer. Metrics (flat, in ``metrics.json``):
``acc_<task>`` per task (test set), ``acc_mean``; for CelebA also ``f1_<attribute>`` and
``f1_mean``; with baselines, ``single_acc_<task>`` of the single-task models and
``delta_m`` (mean over tasks of ``(single - multi) / single * 100`` on accuracy, lower is
better); ``seconds_per_epoch`` (training time per pass over the training set, evaluation
excluded).

Example:
    >>> from moopt.runner.discovery import get_task_class
    >>> cls = get_task_class("moopt.tasks.multitask_vision.adapter:MultitaskVisionTask")
    >>> sorted(cls.presets)
    ['celeba', 'demo', 'demo3', 'smoke']
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moopt.tasks.multitask_vision.baselines import BaselineCache
from moopt.tasks.multitask_vision.config import MultitaskVisionConfig
from moopt.tasks.multitask_vision.data import load_data
from moopt.tasks.multitask_vision.evaluation import evaluate_model
from moopt.tasks.multitask_vision.metrics import delta_m
from moopt.tasks.multitask_vision.presets import PRESETS

from moopt.runner.config import RunConfig
from moopt.runner.report import markdown_table
from moopt.runner.task import ReportSection, RunContext, TaskAdapter, TrainingSetup


@dataclass
class Prepared:
    """Shared by every run of a comparison: the single-task baseline cache."""

    baselines: BaselineCache
    notes: list[str] = field(default_factory=list)


class MultitaskVisionTask(TaskAdapter):
    """Multi-task vision on torchvision: MultiMNIST / MultiMNIST-3 with LeNet, CelebA with
    ResNet-18. See the module docstring for the metrics."""

    name = "multitask-vision"
    description = "MultiMNIST (2/3 tasks, LeNet) and CelebA (40 attributes, ResNet-18)"
    config_class = MultitaskVisionConfig
    presets = PRESETS
    default_preset = "smoke"
    tradeoff = ("acc_left", "acc_right")
    claim_metrics = ["delta_m", "acc_mean"]
    higher_is_better = {"acc_left": True, "acc_right": True, "acc_larger": True,
                        "acc_mean": True, "f1_mean": True, "delta_m": False}

    def objective_names(self, cfg: RunConfig) -> list[str] | None:
        """One objective per task: ``tasks`` when given, else the MultiMNIST variant's
        (CelebA's default selection is known once its data is read)."""
        from moopt.tasks.multitask_vision.multimnist import VARIANTS

        if cfg.tasks is not None:
            return list(cfg.tasks)
        return list(VARIANTS[cfg.dataset]) if cfg.dataset in VARIANTS else None

    def prepare(self, cfg: RunConfig, ctx: RunContext) -> Prepared:
        return Prepared(BaselineCache(ctx.cache_dir))

    def build(self, cfg: RunConfig, ctx: RunContext) -> TrainingSetup:
        from moopt.tasks.multitask_vision.setup import make_setup

        if not isinstance(cfg, MultitaskVisionConfig):
            raise TypeError(f"multitask-vision needs a MultitaskVisionConfig, got {type(cfg)}")
        with ctx.stage("data"):
            data = load_data(cfg)
        setup = make_setup(cfg, data)  # first, so the model's init depends on cfg.seed only
        single: dict[str, float] = {}
        if cfg.baselines:
            prepared = ctx.prepared
            if not isinstance(prepared, Prepared):
                prepared = self.prepare(cfg, ctx)
            with ctx.stage("baselines"):
                for task in data.task_names:
                    single[task] = prepared.baselines.get(cfg, data, task)[f"acc_{task}"]
        setup.extras.update(single=single, train_clock=[time.perf_counter(), 0.0])
        return setup

    def evaluate(self, setup: TrainingSetup, cfg: RunConfig, ctx: RunContext) -> dict[str, float]:
        clock = setup.extras["train_clock"]
        start = time.perf_counter()
        data = setup.extras["data"]
        metrics = evaluate_model(setup.model, data.test, batch_size=cfg.eval_batch_size)
        tasks = data.task_names
        metrics["acc_mean"] = sum(metrics[f"acc_{t}"] for t in tasks) / len(tasks)
        f1 = [metrics[f"f1_{t}"] for t in tasks if f"f1_{t}" in metrics]
        if cfg.dataset == "celeba" and f1:
            metrics["f1_mean"] = sum(f1) / len(f1)
        single = setup.extras["single"]
        if single:
            metrics.update({f"single_acc_{t}": v for t, v in single.items()})
            metrics["delta_m"] = delta_m({t: metrics[f"acc_{t}"] for t in tasks}, single)
        # Training time so far (wall time since build minus time spent evaluating) over the
        # optimizer steps taken so far, read off the batch streams' positions. (A resumed
        # run counts its earlier steps but only this session's time: an underestimate.)
        trained = start - clock[0] - clock[1]
        drawn = [len(o.batches) * o.batches.epoch + o.batches.position
                 for o in setup.objectives.values()]
        steps = max(drawn) if cfg.joint else sum(drawn)
        epochs = steps / setup.steps_per_epoch
        metrics["seconds_per_epoch"] = trained / epochs if epochs else float("nan")
        clock[1] += time.perf_counter() - start
        setup.extras["last_metrics"] = metrics
        return metrics

    def compare_extras(
        self, rows: list[dict[str, Any]], base: RunConfig, out: Path, *, plots: bool = True
    ) -> list[ReportSection]:
        """The side-by-side table over policies x storages x modes (see :mod:`.comparison`)."""
        from moopt.tasks.multitask_vision.comparison import summary_sections

        if not isinstance(base, MultitaskVisionConfig):
            raise TypeError(f"multitask-vision needs a MultitaskVisionConfig, got {type(base)}")
        return summary_sections(rows, base, out, plots=plots)

    def report_extras(
        self, setup: TrainingSetup, cfg: RunConfig, ctx: RunContext
    ) -> list[ReportSection]:
        from moopt.tasks.multitask_vision.memory import optimizer_memory

        data = setup.extras["data"]
        sections = []
        single = setup.extras["single"]
        if single:
            body = "Single-task baselines: one model per task, AdamW (`shared`, fp32), same "
            body += "steps, batch size, learning rate and seed as this run.\n\n"
            accs = {t: setup.extras.get("last_metrics", {}).get(f"acc_{t}") for t in single}
            table = markdown_table(["task", "multi-task accuracy", "single-task accuracy"],
                                   [[t, accs[t], v] for t, v in single.items()])
            images = _accuracy_plot(accs, single, ctx)
            sections.append(ReportSection("Single-task baselines", body + table, images))
        images = next(iter(_first_batch(data)))
        report = optimizer_memory(_cpu_twin(cfg, data), data.task_names, cfg.policy,
                                  cfg.storage, images[:1], **cfg.optimizer_options)
        rows = [["total", report["total_bytes"]], ["bytes per parameter",
                report["bytes_per_param"]], ["parameters", report["num_params"]]]
        rows += [[f"role {k}", v] for k, v in report["by_role"].items()]
        sections.append(ReportSection(
            "Optimizer state memory",
            f"`memory_report()` of `{cfg.policy}` / `{cfg.storage}` with N = "
            f"{len(data.task_names)} objectives (bytes):\n\n" + markdown_table(
                ["what", "value"], rows)))
        return sections


def _accuracy_plot(
    multi: dict[str, float | None], single: dict[str, float], ctx: RunContext
) -> list[str]:
    """``accuracy.png``: multi-task vs single-task accuracy per task (empty if no plot)."""
    if ctx.run_dir is None or any(v is None for v in multi.values()):
        return []
    try:
        from moopt.runner.plots import legend_outside, require_matplotlib

        plt = require_matplotlib()
    except ImportError:
        return []
    tasks = list(single)
    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2.5, 3))
    xs = range(len(tasks))
    ax.bar([x - 0.2 for x in xs], [multi[t] for t in tasks], 0.4, label="multi-task")
    ax.bar([x + 0.2 for x in xs], [single[t] for t in tasks], 0.4, label="single-task")
    ax.set_xticks(list(xs), tasks)
    ax.set_ylabel("test accuracy")
    legend_outside(ax)  # inside, it covered a bar
    fig.tight_layout()
    fig.savefig(ctx.run_dir / "accuracy.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return ["accuracy.png"]


def _cpu_twin(cfg: MultitaskVisionConfig, data: Any) -> Any:
    """A new float32 CPU model of the run's architecture: the optimizer state's size depends
    only on the shapes, the policy and the storage, and the trained model may be on a GPU,
    in bfloat16 or wrapped for ddp / fsdp (which cannot be copied)."""
    import torch
    from moopt.tasks.multitask_vision.setup import make_model

    with torch.random.fork_rng(devices=[]):
        return make_model(cfg.model_copy(update={"model": None}), data)


def _first_batch(data: Any):
    train = data.train
    if hasattr(train, "batch"):
        import torch

        yield train.batch(torch.arange(1))[0]
    else:
        yield train[0][0].unsqueeze(0)
