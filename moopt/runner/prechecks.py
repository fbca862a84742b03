"""Cheap checks of a resolved config before any work: what would otherwise fail only after
an expensive stage 1, or with a bare operating-system error.

Example:
    >>> from moopt.runner.config import RunConfig
    >>> from moopt.runner.prechecks import check_optimizer_settings
    >>> check_optimizer_settings(RunConfig(policy="nope"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    moopt.errors.UnknownNameError: unknown sharing policy 'nope'; known: bridged, decoupled, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moopt.runner.config import ConfigError


def check_directory_path(path: Path | None, flag: str) -> None:
    """A clear one-line error when ``path`` (or a folder above it) is a file, so that it
    can never become a directory."""
    if path is None:
        return
    path = Path(path)
    for node in (path, *path.parents):
        if node.exists():
            if not node.is_dir():
                where = "is a file" if node == path else f"is below the file {str(node)!r}"
                raise ConfigError(f"{flag} {str(path)!r} {where}; it must be a directory "
                               "(created when missing)")
            return


def check_optimizer_settings(cfg: Any) -> None:
    """Build the optimizer a run of ``cfg`` builds, on one dummy parameter, so that an
    unknown policy, storage backend or role, or a bad ``optimizer_options`` entry fails now
    (and in ``--dry-run``), not after an expensive stage 1."""
    import inspect

    import torch

    from moopt.optimizer import MultiObjectiveOptimizer

    params = inspect.signature(MultiObjectiveOptimizer.__init__).parameters
    own = sorted(set(cfg.optimizer_options) & {"params", "objectives", "policy", "storage",
                                               "lr", "betas", "base_betas", "eps",
                                               "weight_decay", "lr_ratios"})
    if own:
        raise ConfigError(f"config key 'optimizer_options' sets {own}: set them as config keys "
                       "of their own (--set KEY=VALUE)")
    unknown = sorted(set(cfg.optimizer_options) - set(params) - {"self"})
    if unknown:
        takes = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY)
        raise ConfigError(f"config key 'optimizer_options': unknown option(s) {unknown}; the "
                       f"optimizer takes {', '.join(takes)}")
    MultiObjectiveOptimizer([torch.nn.Parameter(torch.zeros(1))], objectives=["a", "b"],
                            policy=cfg.policy, storage=cfg.storage, lr=cfg.lr, betas=cfg.betas,
                            base_betas=cfg.base_betas, eps=cfg.eps,
                            weight_decay=cfg.weight_decay, **cfg.optimizer_options)
