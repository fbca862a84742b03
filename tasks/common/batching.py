"""Padding and length-bucketed batching of tokenised examples, deterministic by seed.

Each batch is padded to its own longest example, not to the longest of the data set:
examples are shuffled, cut into "mega-batches" of ``batch_size * bucket_batches``, sorted
by length inside each mega-batch, cut into batches, and the batch order is shuffled
again. Same seed and epoch, same batches.

Example:
    >>> from moopt.tasks.common.batching import length_bucketed_batches
    >>> length_bucketed_batches([5, 1, 4, 2], batch_size=2, seed=0, shuffle=False)
    [[0, 2], [3, 1]]
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

IGNORE_INDEX = -100


def collate(
    examples: Sequence[Any], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad examples (with ``input_ids`` and ``labels``) into an HF batch dict.

    Returns ``input_ids`` (padded with ``pad_token_id``), ``attention_mask`` (0 on padding)
    and ``labels`` (-100 on padding), all ``int64`` of shape [B, longest].
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if not examples:
        raise ValueError("collate: no examples")
    if pad_token_id is None:
        raise ValueError("collate: pad_token_id is None; set tokenizer.pad_token first")
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        if len(e.labels) != n:
            raise ValueError(f"collate: example {i} has {n} input_ids but {len(e.labels)} labels")
        cols = slice(0, n) if padding_side == "right" else slice(width - n, width)
        ids[i, cols] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, cols] = torch.tensor(e.labels, dtype=torch.long)
        mask[i, cols] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    bucket_batches: int = 16,
    drop_last: bool = False,
) -> list[list[int]]:
    """Index batches grouping similar lengths. Without ``shuffle``: all examples sorted by
    decreasing length (ties in index order), then cut in order."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if not isinstance(bucket_batches, int) or bucket_batches < 1:
        raise ValueError(f"bucket_batches must be an int >= 1, got {bucket_batches!r}")
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
        mega = batch_size * bucket_batches
    else:
        mega = max(1, len(order))
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    if shuffle:
        rng.shuffle(batches)
    return batches


class BucketedBatchSampler(Sampler[list[int]]):
    """``torch.utils.data`` batch sampler over ``length_bucketed_batches``.

    Call ``set_epoch(e)`` before each epoch for a new (still deterministic) order: the
    batches of epoch ``e`` use seed ``seed + e``.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        bucket_batches: int = 16,
        drop_last: bool = False,
    ) -> None:
        self.lengths = list(lengths)
        self.kwargs = dict(
            batch_size=batch_size,
            shuffle=shuffle,
            bucket_batches=bucket_batches,
            drop_last=drop_last,
        )
        self.seed = seed
        self.epoch = 0
        length_bucketed_batches(self.lengths[:1], seed=seed, **self.kwargs)  # validate early

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches(self) -> list[list[int]]:
        return length_bucketed_batches(self.lengths, seed=self.seed + self.epoch, **self.kwargs)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def iterate_batches(
    examples: Sequence[Any],
    batch_size: int,
    *,
    pad_token_id: int,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    bucket_batches: int = 16,
) -> Iterator[dict[str, torch.Tensor]]:
    """Collated, length-bucketed batches of ``examples`` for one epoch."""
    lengths = [len(e.input_ids) for e in examples]
    for idx in length_bucketed_batches(
        lengths, batch_size, seed=seed + epoch, shuffle=shuffle, bucket_batches=bucket_batches
    ):
        yield collate([examples[i] for i in idx], pad_token_id)
