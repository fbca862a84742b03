"""Putting a task's model where the run computes: precision, activation checkpointing,
device, and the data-parallel wrapping of ``parallel``.

The wrappers work *in place*, so the task's loss functions, which call the model object
they built, get the distributed behaviour without knowing about it:

* ``ddp``: torch's DistributedDataParallel applied to the module itself
  (``torch.distributed._composable.replicate``), with ``find_unused_parameters`` because
  an objective may leave parameters unused (another task's head). Every rank holds the
  whole model and optimizer state; gradients are all-reduced in backward.
* ``fsdp``: FSDP2 ``fully_shard`` on every transformer block (the classes a Hugging Face
  model lists in ``_no_split_modules``; else every direct child with parameters, looking
  into ``ModuleList`` / ``ModuleDict`` containers), then on the root. Parameters,
  gradients and optimizer state are DTensors sharded over the ranks; ``fully_shard``
  moves each block to the device as it shards it, so a model that does not fit one
  device can be built on the CPU and trained.

Example (one process: no wrapping, only precision and device):
    >>> import torch
    >>> from moopt.runner import RunConfig, TrainingSetup, TrainObjective
    >>> from moopt.runner.devices import resolve_hardware
    >>> from moopt.runner.placement import place_model
    >>> model = torch.nn.Linear(2, 1)
    >>> setup = TrainingSetup(model, {"a": TrainObjective(lambda: model.weight.sum())})
    >>> cfg = RunConfig(device="cpu", precision="bf16")
    >>> placed = place_model(setup, cfg, resolve_hardware(cfg))
    >>> placed.model.weight.dtype, placed.sharded
    (torch.bfloat16, False)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from moopt.runner.config import ConfigError, RunConfig
from moopt.runner.devices import Hardware
from moopt.runner.task import TrainingSetup


@dataclass
class Placed:
    """The placed model, the optimizer's parameters (re-found after sharding; ``None``:
    every parameter with ``requires_grad``), and how it was placed."""

    model: nn.Module
    params: list[Any] | None
    hardware: Hardware
    sharded: bool = False

    @property
    def input_dtype(self) -> torch.dtype | None:
        """dtype floating-point inputs are cast to (bfloat16 weights), else None."""
        dtype = self.hardware.param_dtype
        return dtype if dtype != torch.float32 else None

    @contextlib.contextmanager
    def no_sync(self, active: bool = True) -> Iterator[None]:
        """Under ``ddp``: no gradient all-reduce in the forward/backward passes of the block
        (gradient accumulation, or several backward passes reduced by hand afterwards)."""
        if not active or self.hardware.parallel != "ddp":
            yield
            return
        self.model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing of a Hugging Face model (non-reentrant, which also works
    with frozen inputs, LoRA, DDP and FSDP2); a clear error for other models."""
    kwargs = {"use_reentrant": False}
    # transformers 5 renamed it (the old name warns); 4.x has only the old one.
    new = getattr(model, "activation_checkpointing_enable", None)
    old = getattr(model, "gradient_checkpointing_enable", None)
    if not callable(new or old) or not getattr(model, "supports_gradient_checkpointing", True):
        raise ConfigError(
            f"config key 'gradient_checkpointing': the model ({type(model).__name__}) does "
            "not support it; it needs a Hugging Face model with gradient_checkpointing_enable()")
    if callable(new):
        new(activation_checkpointing_kwargs=kwargs)
    else:
        old(gradient_checkpointing_kwargs=kwargs)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False  # a KV cache is useless in training and clashes with it


def shard_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules ``fsdp`` shards one by one before the root (see the module docstring)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    if names:
        blocks = [m for m in model.modules() if type(m).__name__ in names]
        if blocks:
            return blocks
    blocks = []
    for child in model.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):  # containers have no forward
            blocks += shard_blocks(child)
        elif next(child.parameters(), None) is not None:
            blocks.append(child)
    return blocks


def _fully_shard(model: nn.Module, device: torch.device) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
    for block in shard_blocks(model):
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def place_frozen(module: nn.Module, hw: Any) -> nn.Module:
    """Place a frozen module (a task's reference model) as the trained model is placed, in
    place: the run's weight dtype and device; under ``fsdp`` sharded over the ranks like the
    trained model, so each device holds 1/world of it instead of a full copy (every forward
    gathers one block at a time and frees it again). Its parameters stop requiring
    gradients. Every rank must call its forward the same number of times (the losses that
    use a reference call it once per batch on every rank).

    Example (one process: dtype and device only):
        >>> import torch
        >>> from moopt.runner.devices import Hardware
        >>> hw = Hardware(torch.device("cpu"), "bf16", "none")
        >>> ref = place_frozen(torch.nn.Linear(2, 1), hw)
        >>> ref.weight.dtype, ref.weight.requires_grad
        (torch.bfloat16, False)
    """
    for param in module.parameters():
        param.requires_grad_(False)
    if hw.param_dtype != torch.float32:
        module.to(hw.param_dtype)
    if hw.parallel == "fsdp":
        _fully_shard(module, hw.device)
        return module
    return module.to(hw.device)


def _replicate(model: nn.Module, device: torch.device) -> None:
    from torch.distributed._composable import replicate

    replicate(model, device_id=device, find_unused_parameters=True)


def _names(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}


def _refind(params: list[Any], before: dict[int, str], model: nn.Module) -> list[Any]:
    """The optimizer's parameter list with every tensor replaced by the model's parameter
    of the same name (``fully_shard`` replaces parameters by sharded ones)."""
    now = dict(model.named_parameters(remove_duplicate=False))

    def find(p: torch.Tensor) -> torch.Tensor:
        name = before.get(id(p))
        if name is None or name not in now:
            raise ValueError(f"an optimizer parameter of shape {tuple(p.shape)} is not a "
                             "parameter of the model; under parallel='fsdp' the optimizer "
                             "can only train the model's own parameters")
        return now[name]

    out = []
    for item in params:
        if isinstance(item, dict):
            out.append({**item, "params": [find(p) for p in item["params"]]})
        else:
            out.append(find(item))
    return out


def place_model(setup: TrainingSetup, cfg: RunConfig, hw: Hardware) -> Placed:
    """Apply ``cfg``'s precision, gradient checkpointing, device and ``parallel`` mode to
    ``setup.model`` (in place) and return it with the optimizer's parameters."""
    model = setup.model
    params = None if setup.params is None else list(setup.params)
    before = _names(model)
    if hw.param_dtype != torch.float32:
        model.to(hw.param_dtype)  # floating-point parameters and buffers only
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if hw.parallel == "fsdp":
        _fully_shard(model, hw.device)
        if params is not None:
            params = _refind(params, before, model)
        return Placed(model, params, hw, sharded=True)
    model.to(hw.device)
    if hw.parallel == "ddp":
        _replicate(model, hw.device)
    return Placed(model, params, hw)
