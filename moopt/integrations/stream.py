"""Micro-batches in schedule order: what a step-based trainer consumes for N objectives.

For optimizer step ``s`` the schedule names an objective; the stream yields
``accumulation`` micro-batches of that objective, each tagged with its name under
:data:`OBJECTIVE_KEY`. The stream is a pure function of its inputs (each objective's
loader is re-iterated when exhausted), so a trainer that resumes by skipping the first
``k`` micro-batches continues exactly where it stopped.

Each objective's loader draws its random numbers (a ``DataLoader``'s base seed at every
restart, a ``RandomSampler``'s shuffle) from a torch generator of its own, seeded by
``seed`` and the objective's name, never from the global one. So restarting a loader does
not shift the random numbers of dropout, and a resumed run, which replays the skipped
micro-batches and then restores the global generator, sees the same dropout masks and the
same shuffles as an uninterrupted run.

Example:
    >>> from moopt.integrations.stream import ObjectiveStream, OBJECTIVE_KEY
    >>> loaders = {"forget": [{"x": 0}, {"x": 1}], "retain": [{"x": 10}, {"x": 11}, {"x": 12}]}
    >>> s = ObjectiveStream(loaders, {"forget": 1, "retain": 2}, accumulation=2)
    >>> [(b[OBJECTIVE_KEY], b["x"]) for b, _ in zip(s, range(6))]
    [('forget', 0), ('forget', 1), ('retain', 10), ('retain', 11), ('retain', 12), ('retain', 10)]
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import torch

from moopt.schedules import Schedule, make_schedule

OBJECTIVE_KEY = "moopt_objective"
T = TypeVar("T")


class ObjectiveStream(torch.utils.data.IterableDataset):
    """An endless iterable of tagged micro-batches (dicts) in schedule order.

    Args:
        loaders: objective name -> re-iterable source of dict batches (e.g. a DataLoader).
        schedule: a :class:`~moopt.schedules.Schedule` or a spec accepted by
            :func:`moopt.schedules.make_schedule` (``{"forget": 1, "retain": 5}``,
            ``"round_robin"``); its current position is where the stream starts.
        accumulation: micro-batches per optimizer step (gradient accumulation).
        seed: seed of the objectives' own random generators (see the module docstring);
            ``None`` lets the loaders draw from torch's global generator.
    """

    def __init__(self, loaders: Mapping[str, Iterable[Mapping[str, Any]]], schedule: Any,
                 accumulation: int = 1, seed: int | None = 0) -> None:
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
        self.seed = seed

    def objective_at(self, step: int) -> str:
        """The objective of optimizer step ``step`` (0-based, from the schedule's start)."""
        schedule = copy.deepcopy(self.schedule)
        for _ in range(step):
            next(schedule)
        return next(schedule)

    def _own_rng(self, name: str) -> Callable[[Callable[[], T]], T]:
        """A function that runs a call with ``name``'s generator in place of torch's global
        CPU generator, leaving the global one as it was."""
        if self.seed is None:
            return lambda call: call()
        seed = (self.seed * 0x9E3779B1 + zlib.crc32(name.encode())) % 2**63
        state = [torch.Generator().manual_seed(seed).get_state()]

        def run(call: Callable[[], T]) -> T:
            outer = torch.get_rng_state()
            torch.set_rng_state(state[0])
            try:
                return call()
            finally:
                state[0] = torch.get_rng_state()
                torch.set_rng_state(outer)

        return run

    def _endless(self, name: str) -> Iterator[Mapping[str, Any]]:
        isolated = self._own_rng(name)
        while True:
            empty = True
            batches = isolated(lambda: iter(self.loaders[name]))
            step = batches.__next__
            while True:
                try:
                    batch = isolated(step)
                except StopIteration:
                    break
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
