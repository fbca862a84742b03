"""A small name -> object registry used for policies, storage backends and objectives.

Example:
    >>> from moopt.base.registry import Registry
    >>> colors = Registry("color")
    >>> @colors.register("red")
    ... class Red: ...
    >>> colors.get("red") is Red
    True
    >>> colors.names()
    ['red']
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from moopt.base.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered objects (classes or functions) of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; without ``obj`` this is a decorator."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(target: T) -> T:
            if name in self._entries and not overwrite and self._entries[name] is not target:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it"
                )
            self._entries[name] = target
            return target

        if obj is not None:
            return add(obj)
        return add

    def unregister(self, name: str) -> None:
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


def decorator_for(registry: Registry[T]) -> Callable[..., Callable[[T], T]]:
    """Build the public ``register_xxx(name)`` decorator of a registry."""

    def register(name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        return registry.register(name, overwrite=overwrite)

    register.__doc__ = f"Decorator registering a {registry.kind} under ``name``."
    return register
