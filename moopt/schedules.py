"""Schedules: which objective drives each alternating step. Resumable by position.

Example:
    >>> from moopt.schedules import Alternating, RoundRobin
    >>> Alternating({"forget": 1, "retain": 5}).take(7)
    ['forget', 'retain', 'retain', 'retain', 'retain', 'retain', 'forget']
    >>> s = RoundRobin(["a", "b", "c"]); next(s), next(s)
    ('a', 'b')
    >>> t = RoundRobin(["a", "b", "c"]); t.load_state_dict(s.state_dict()); next(t)
    'c'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from moopt.errors import StateMismatchError


class Schedule(Iterator[str]):
    """An endless iterator of objective names with a resumable position."""

    kind = "schedule"

    def __init__(self) -> None:
        self.position = 0

    def _at(self, position: int) -> str:
        raise NotImplementedError

    def __next__(self) -> str:
        name = self._at(self.position)
        self.position += 1
        return name

    def take(self, n: int) -> list[str]:
        """The next ``n`` names (advances the schedule)."""
        return [next(self) for _ in range(n)]

    def objectives(self) -> list[str]:
        """Every name this schedule can yield."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "position": self.position, "config": self.config()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind or state.get("config") != self.config():
            raise StateMismatchError(
                f"saved schedule {state.get('kind')!r} {state.get('config')!r} does not match "
                f"this {self.kind!r} {self.config()!r}")
        position = state.get("position")
        if not isinstance(position, int) or position < 0:
            raise StateMismatchError(f"saved schedule position {position!r} is not an int >= 0")
        self._seek(position)

    def _seek(self, position: int) -> None:
        self.position = position

    def config(self) -> Any:
        return None


class Alternating(Schedule):
    """Blocks of consecutive steps per objective: ``{"forget": 1, "retain": 5}`` yields
    f, r, r, r, r, r, f, ... (objectives in the mapping's order)."""

    kind = "alternating"

    def __init__(self, frequencies: Mapping[str, int]) -> None:
        super().__init__()
        if not isinstance(frequencies, Mapping) or not frequencies:
            raise ValueError(f"frequencies must be a non-empty mapping name -> steps, "
                             f"got {frequencies!r}")
        for name, count in frequencies.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"schedule objective names must be non-empty strings, "
                                 f"got {name!r}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"frequency of {name!r} must be an int >= 0, got {count!r}")
        self.frequencies = dict(frequencies)
        self._cycle = [name for name, count in self.frequencies.items() for _ in range(count)]
        if not self._cycle:
            raise ValueError(f"every frequency is 0 in {self.frequencies}; nothing to schedule")

    def _at(self, position: int) -> str:
        return self._cycle[position % len(self._cycle)]

    def objectives(self) -> list[str]:
        return [k for k, c in self.frequencies.items() if c > 0]

    def config(self) -> Any:
        return self.frequencies


class RoundRobin(Alternating):
    """One step per objective in turn."""

    kind = "round_robin"

    def __init__(self, objectives: Sequence[str]) -> None:
        if isinstance(objectives, str):
            raise TypeError(f"objectives must be a list of names, got the string {objectives!r}")
        super().__init__(dict.fromkeys(objectives, 1))

    def config(self) -> Any:
        return list(self.frequencies)


class FromIterator(Schedule):
    """A custom schedule from a factory of iterators. Resuming at position n re-creates the
    iterator and advances it n times, so the factory must be deterministic."""

    kind = "custom"

    def __init__(self, factory: Callable[[], Iterable[str]], objectives: Sequence[str]) -> None:
        super().__init__()
        if not callable(factory):
            raise TypeError(f"factory must be callable (returning an iterable), got {factory!r}")
        self.factory = factory
        self._names = list(objectives)
        self._iter = iter(factory())

    def _at(self, position: int) -> str:
        try:
            name = next(self._iter)
        except StopIteration:
            raise StopIteration(f"custom schedule ended after {position} steps") from None
        if name not in self._names:
            raise ValueError(f"custom schedule yielded {name!r} at step {position}; "
                             f"objectives are {self._names}")
        return name

    def _seek(self, position: int) -> None:
        self._iter = iter(self.factory())
        self.position = 0
        for _ in range(position):
            next(self)

    def objectives(self) -> list[str]:
        return list(self._names)

    def config(self) -> Any:
        return self._names


def make_schedule(spec: Any, objectives: Sequence[str]) -> Schedule:
    """A schedule from a spec: a Schedule, ``{name: frequency}``, ``"round_robin"``, or a
    zero-argument callable returning an iterable of names. Names are checked."""
    if isinstance(spec, Schedule):
        schedule = spec
    elif isinstance(spec, Mapping):
        schedule = Alternating(spec)
    elif spec == "round_robin":
        schedule = RoundRobin(objectives)
    elif callable(spec):
        schedule = FromIterator(spec, objectives)
    else:
        raise ValueError(f"unknown schedule {spec!r}; use a mapping name -> frequency, "
                         "'round_robin', a callable, or a Schedule")
    unknown = [k for k in schedule.objectives() if k not in objectives]
    if unknown:
        raise ValueError(f"schedule names unknown objectives {unknown}; objectives are "
                         f"{list(objectives)}")
    return schedule
