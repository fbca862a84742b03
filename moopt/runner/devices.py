"""Where and in what precision a run computes: the ``device``, ``precision`` and
``parallel`` fields of :class:`~moopt.runner.config.RunConfig`, resolved once per run.

* ``device``: ``auto`` is ``cuda`` when CUDA is available, else ``cpu``. Under torchrun
  (``LOCAL_RANK`` set) ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``, one device per rank.
  Asking for CUDA where there is none is a :class:`~moopt.runner.config.ConfigError`
  raised before anything is created.
* ``precision``: ``fp32`` (float32 weights and math), ``bf16-mixed`` (float32 weights,
  forward and loss under ``torch.autocast(dtype=torch.bfloat16)``), ``bf16`` (bfloat16
  weights; the optimizer still does its math in float32 and keeps its state in the chosen
  storage, but every update is rounded to bfloat16 when it is added to a weight).
* ``parallel``: ``none``, ``ddp`` or ``fsdp``; the latter two need a torchrun launch. The
  process group is initialised here (nccl for CUDA devices, gloo for the CPU).

Example:
    >>> from moopt.runner.config import RunConfig
    >>> from moopt.runner.devices import resolve_hardware
    >>> hw = resolve_hardware(RunConfig(device="cpu", precision="bf16-mixed"))
    >>> str(hw.device), hw.param_dtype, hw.autocast_dtype
    ('cpu', torch.float32, torch.bfloat16)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from moopt.runner.config import ConfigError, RunConfig

# precision -> (dtype of the weights, dtype of autocast or None)
PRECISIONS: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "fp32": (torch.float32, None),
    "bf16-mixed": (torch.float32, torch.bfloat16),
    "bf16": (torch.bfloat16, None),
}


@dataclass(frozen=True)
class Hardware:
    """The resolved device, precision and parallel mode of one run (one rank)."""

    device: torch.device
    precision: str
    parallel: str
    rank: int = 0
    world_size: int = 1

    @property
    def param_dtype(self) -> torch.dtype:
        """dtype of the trained weights (floating-point parameters and buffers)."""
        return PRECISIONS[self.precision][0]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """dtype of ``torch.autocast`` around forward and loss, or None (no autocast)."""
        return PRECISIONS[self.precision][1]

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """``torch.autocast`` for ``bf16-mixed``; nothing otherwise."""
        dtype = self.autocast_dtype
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    def describe(self) -> dict[str, Any]:
        """What run.json and the report record about the hardware."""
        info: dict[str, Any] = {"device": str(self.device), "precision": self.precision,
                                "parallel": self.parallel, "world_size": self.world_size,
                                "torch": torch.__version__}
        if self.device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self.device)
            info["cuda"] = torch.version.cuda
        return info


def local_rank() -> int | None:
    """``LOCAL_RANK`` of a torchrun launch, else None."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None else None


def resolve_device(spec: str) -> torch.device:
    """The torch device of a ``device`` config value (see the module docstring)."""
    if spec == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if spec == "auto" and not available:
        return torch.device("cpu")
    if not available:
        built = torch.version.cuda or "none"
        raise ConfigError(
            f"device {spec!r} was requested but CUDA is not available here (torch "
            f"{torch.__version__}, built with CUDA {built}); use --device cpu or auto")
    count = torch.cuda.device_count()
    lr = local_rank()
    if spec in ("auto", "cuda"):
        index = lr if lr is not None else torch.cuda.current_device()
        if index >= count:
            raise ConfigError(f"torchrun started local rank {index} but this node has only "
                              f"{count} CUDA device(s); use --nproc_per_node {count} or less")
        return torch.device("cuda", index)
    index = int(spec.partition(":")[2])
    if index >= count:
        raise ConfigError(f"device {spec!r}: this machine has {count} CUDA device(s) "
                          f"(cuda:0 to cuda:{count - 1})")
    if lr is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"device {spec!r} under torchrun would put every rank on one "
                          "device; use --device cuda (each rank takes cuda:LOCAL_RANK)")
    return torch.device("cuda", index)


def init_distributed(cfg: RunConfig, device: torch.device | None = None) -> None:
    """Initialise the default process group when the run was launched by torchrun with
    several ranks (or with ``parallel`` set): nccl for a CUDA device, gloo for the CPU. A
    group that already exists is kept. ``parallel`` without a launcher is an error."""
    from moopt import distributed as mdist

    launched = mdist.launched_by_torchrun()
    if cfg.parallel != "none" and not (launched or mdist.is_initialized()):
        raise ConfigError(
            f"config key 'parallel' = {cfg.parallel!r} needs a torchrun launch, e.g. "
            "torchrun --nproc_per_node 2 -m moopt run TASK ...; use parallel 'none' for "
            "one process")
    if mdist.is_initialized() or not launched:
        return
    if int(os.environ["WORLD_SIZE"]) == 1 and cfg.parallel == "none":
        return
    device = device if device is not None else resolve_device(cfg.device)
    mdist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def resolve_hardware(cfg: RunConfig) -> Hardware:
    """Resolve ``cfg``'s device, precision and parallel mode; initialise the process group
    if needed (see :func:`init_distributed`). Raises :class:`ConfigError` on bad values."""
    from moopt import distributed as mdist

    device = resolve_device(cfg.device)
    init_distributed(cfg, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return Hardware(device, cfg.precision, cfg.parallel, mdist.rank(), mdist.world_size())
