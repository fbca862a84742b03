"""Fixtures of the multi-task vision tests: tiny data roots in the real on-disk layouts."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from moopt.tasks.multitask_vision.celeba import CELEBA_ATTRIBUTES


def write_celeba_root(root: Path, n: int = 12, seed: int = 0, size: tuple[int, int] = (20, 24)):
    """A CelebA root in torchvision's layout with ``n`` small random images.

    Splits cycle train/train/valid/test. Returns the attribute table as a {-1, 1} array
    ``[n, 40]`` so tests can compare against what the loader returns.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    attrs = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    for name in names:
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(base / "img_align_celeba" / name)
    rows = ["  ".join([name] + [f"{v:2d}" for v in row]) for name, row in zip(names, attrs)]
    (base / "list_attr_celeba.txt").write_text(
        f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + "\n" + "\n".join(rows) + "\n"
    )
    splits = [0, 0, 1, 2]
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{name} {splits[i % 4]}\n" for i, name in enumerate(names))
    )
    (base / "identity_CelebA.txt").write_text(
        "".join(f"{name} {i % 3 + 1}\n" for i, name in enumerate(names))
    )
    (base / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n"
        + "".join(f"{name} 1 2 10 12\n" for name in names)
    )
    marks = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
    marks += "rightmouth_x rightmouth_y"
    (base / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\n{marks}\n" + "".join(f"{name} " + " ".join(["5"] * 10) + "\n" for name in names)
    )
    return attrs


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an uint8 array as an IDX file (the raw MNIST format)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_root(root: Path, n_train: int = 60, n_test: int = 30, seed: int = 0) -> None:
    """A torchvision MNIST root (ROOT/MNIST/raw/*-ubyte) with random 28x28 digits."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


@pytest.fixture
def celeba_root(tmp_path: Path) -> tuple[Path, np.ndarray]:
    attrs = write_celeba_root(tmp_path)
    return tmp_path, attrs


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    write_mnist_root(tmp_path)
    return tmp_path
