"""Sharing policies and storage backends (importing this registers the built-in ones)."""

from moopt.states import bf16, bridged, decoupled, fp8, int8, shared  # noqa: F401  (registration)
from moopt.states.policy import (
    BufferSpec,
    SharingPolicy,
    StepInfo,
    get_policy,
    list_policies,
    register_policy,
)
from moopt.states.storage import (
    Codec,
    StorageBackend,
    get_storage,
    list_storages,
    register_storage,
)

__all__ = [
    "BufferSpec", "Codec", "SharingPolicy", "StepInfo", "StorageBackend", "get_policy",
    "get_storage", "list_policies", "list_storages", "register_policy", "register_storage",
]
