"""Suite-wide test options: tests marked ``cuda`` skip, with the reason, where no CUDA
device is visible (``make device-check`` runs them on a machine that has one)."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device; none is visible here (torch "
                                   f"{torch.__version__}, CUDA build {torch.version.cuda})")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
