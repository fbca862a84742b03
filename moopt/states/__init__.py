"""Sharing policies and storage backends (importing this registers the built-in ones)."""

from moopt.states import bf16, bridged, decoupled, int8, shared  # noqa: F401  (registration)
from moopt.states.policy import (
    BufferSpec,
    BufferView,
    GroupBatch,
    SharingPolicy,
    StepContext,
    get_policy,
    list_policies,
    register_policy,
)
from moopt.states.storage import (
    StorageBackend,
    get_storage,
    list_storages,
    register_storage,
)

__all__ = [
    "BufferSpec", "BufferView", "GroupBatch", "SharingPolicy", "StepContext", "StorageBackend",
    "get_policy", "get_storage", "list_policies", "list_storages", "register_policy",
    "register_storage",
]
