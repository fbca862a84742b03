"""Suite-wide test options: tests marked ``cuda`` skip, with the reason, where no CUDA
device is visible (``make device-check`` runs them on a machine that has one); Hugging Face
libraries run in offline mode."""

from __future__ import annotations

import os

# Tests never use the network: Hugging Face libraries stay in offline mode (bitsandbytes
# would ask the Hub about a CPU kernel when imported; tests/test_offline.py holds this).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA device; none is visible here (torch "
                                   f"{torch.__version__}, CUDA build {torch.version.cuda})")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
