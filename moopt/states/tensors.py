"""Plain-tensor views of distributed (DTensor / FSDP2) parameters and state.

Storage backends and fast kernels work on the process-local shard: quantization blocks are
cut per shard, and elementwise optimizer math needs no communication. FSDP1 flat shards are
plain tensors already and need nothing.

Example:
    >>> import torch
    >>> from moopt.states.tensors import is_distributed, local
    >>> t = torch.ones(3)
    >>> is_distributed(t), local(t) is t
    (False, True)
"""

from __future__ import annotations

from torch import Tensor


def is_distributed(t: Tensor) -> bool:
    """True for a DTensor (anything with a device mesh and a local shard)."""
    return hasattr(t, "device_mesh") and hasattr(t, "to_local")


def local(t: Tensor) -> Tensor:
    """The process-local tensor of ``t`` (``t`` itself unless it is a DTensor)."""
    return t.to_local() if is_distributed(t) else t


def like(local_value: Tensor, param: Tensor) -> Tensor:
    """``local_value`` as a tensor of ``param``'s kind: a DTensor with ``param``'s mesh and
    placements when ``param`` is one, else unchanged."""
    if not is_distributed(param):
        return local_value
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(local_value, param.device_mesh, param.placements,
                              run_check=False, shape=param.shape, stride=param.stride())
