"""moopt: multi-objective optimizers for PyTorch with swappable state-sharing policies.

Example:
    >>> import torch, moopt
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = moopt.MultiObjectiveOptimizer(model.parameters(), objectives=["forget", "retain"],
    ...                                     policy="bridged", lr=1e-3)
    >>> model(torch.ones(1, 3)).sum().backward(); opt.step(objective="retain")
    >>> sorted(moopt.list_policies())[:3]
    ['bridged', 'decoupled', 'shared']
"""

from moopt import schedules
from moopt.errors import MooptError, NonFiniteGradientError, StateMismatchError, UnknownNameError
from moopt.optimizer import MultiObjectiveOptimizer
from moopt.states import (
    BufferSpec,
    SharingPolicy,
    StorageBackend,
    get_policy,
    get_storage,
    list_policies,
    list_storages,
    register_policy,
    register_storage,
)

__version__ = "0.1.0"

__all__ = [
    "BufferSpec", "MooptError", "MultiObjectiveOptimizer", "NonFiniteGradientError",
    "SharingPolicy", "StateMismatchError", "StorageBackend", "UnknownNameError", "get_policy",
    "get_storage", "list_policies", "list_storages", "register_policy", "register_storage",
    "schedules",
]
