"""The generic training runner: task-adapter interface, run config, loop, reports.

A *task adapter* (:class:`TaskAdapter`) says how to build a model, the data and losses of
each objective and how to evaluate; the runner does the rest for every task the same way:
optimizer and schedule construction, the training loop with periodic evaluation and
resumable checkpoints, metrics history, reports and grid comparisons.

The core package never imports ``tasks/``: adapters are found through the ``moopt.tasks``
entry-point group (see :func:`moopt.runner.discovery.get_task`).
"""

from __future__ import annotations

from moopt.runner.config import RunConfig
from moopt.runner.data import BatchStream
from moopt.runner.task import ReportSection, RunContext, TaskAdapter, TrainingSetup, TrainObjective

__all__ = [
    "BatchStream",
    "TrainObjective",
    "ReportSection",
    "RunConfig",
    "RunContext",
    "TaskAdapter",
    "TrainingSetup",
]
