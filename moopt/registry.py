"""The name -> object registry of policies, storages and objectives (public name; defined in
:mod:`moopt.base.registry`).

Example:
    >>> from moopt.registry import Registry
    >>> Registry("color").names()
    []
"""

from moopt.base.registry import Registry, decorator_for

__all__ = ["Registry", "decorator_for"]
