"""Micro-batches in schedule order: what a step-based trainer consumes for N objectives.

For optimizer step ``s`` the schedule names an objective; the stream yields
``accumulation`` micro-batches of that objective, each tagged with its name under
:data:`OBJECTIVE_KEY`. The stream is a pure function of its inputs (each objective's
loader is re-iterated when exhausted), so a trainer that resumes by skipping the first
``k`` micro-batches continues exactly where it stopped, provided the loaders are
deterministic (no shuffling, or a seeded sampler).

Example:
    >>> from moopt.integrations.stream import ObjectiveStream, OBJECTIVE_KEY
    >>> loaders = {"forget": [{"x": 0}, {"x": 1}], "retain": [{"x": 10}, {"x": 11}, {"x": 12}]}
    >>> s = ObjectiveStream(loaders, {"forget": 1, "retain": 2}, accumulation=2)
    >>> [(b[OBJECTIVE_KEY], b["x"]) for b, _ in zip(s, range(6))]
    [('forget', 0), ('forget', 1), ('retain', 10), ('retain', 11), ('retain', 12), ('retain', 10)]
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from moopt.schedules import Schedule, make_schedule

OBJECTIVE_KEY = "moopt_objective"


class ObjectiveStream(torch.utils.data.IterableDataset):
    """An endless iterable of tagged micro-batches (dicts) in schedule order.

    Args:
        loaders: objective name -> re-iterable source of dict batches (e.g. a DataLoader).
        schedule: a :class:`~moopt.schedules.Schedule` or a spec accepted by
            :func:`moopt.schedules.make_schedule` (``{"forget": 1, "retain": 5}``,
            ``"round_robin"``); its current position is where the stream starts.
        accumulation: micro-batches per optimizer step (gradient accumulation).
    """

    def __init__(self, loaders: Mapping[str, Iterable[Mapping[str, Any]]], schedule: Any,
                 accumulation: int = 1) -> None:
        super().__init__()
        if not isinstance(loaders, Mapping) or not loaders:
            raise ValueError(f"loaders must be a non-empty mapping objective -> batches, "
                             f"got {loaders!r}")
        if isinstance(accumulation, bool) or not isinstance(accumulation, int) \
                or accumulation < 1:
            raise ValueError(f"accumulation must be an int >= 1, got {accumulation!r}")
        self.loaders = dict(loaders)
        self.schedule: Schedule = make_schedule(schedule, list(self.loaders))
        self.accumulation = accumulation

    def objective_at(self, step: int) -> str:
        """The objective of optimizer step ``step`` (0-based, from the schedule's start)."""
        schedule = copy.deepcopy(self.schedule)
        for _ in range(step):
            next(schedule)
        return next(schedule)

    def _endless(self, name: str) -> Iterator[Mapping[str, Any]]:
        while True:
            empty = True
            for batch in self.loaders[name]:
                empty = False
                yield batch
            if empty:
                raise ValueError(f"the loader of objective {name!r} yields no batches")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        schedule = copy.deepcopy(self.schedule)
        sources = {name: self._endless(name) for name in self.loaders}
        while True:
            name = next(schedule)
            for _ in range(self.accumulation):
                batch = next(sources[name])
                if not isinstance(batch, Mapping):
                    raise TypeError(f"objective {name!r}: batches must be dicts, got "
                                    f"{type(batch).__name__}")
                yield {**batch, OBJECTIVE_KEY: name}
