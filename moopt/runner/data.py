"""A resumable, endless, seeded batch stream.

The runner checkpoints every objective's batch stream, so an interrupted run that resumes
sees exactly the batches an uninterrupted run would have seen. The state is just
``(epoch, position)``: the order of epoch ``e`` is a permutation drawn from a generator
seeded with ``(seed, e)``, so it can be recomputed instead of stored.

Example:
    >>> from moopt.runner.data import BatchStream
    >>> s = BatchStream(["a", "b", "c"], shuffle=False)
    >>> [next(s) for _ in range(4)]
    ['a', 'b', 'c', 'a']
    >>> t = BatchStream(["a", "b", "c"], shuffle=False)
    >>> t.load_state_dict(s.state_dict())
    >>> next(t)
    'b'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch


class BatchStream(Iterator[Any]):
    """Yields ``batches[i]`` in a (re)shuffled order per epoch, forever.

    ``batches`` is a sequence of ready batches (e.g. length-bucketed ones). With
    ``batch_size`` the sequence holds single items instead, grouped ``batch_size`` at a time
    in the shuffled order and merged by ``collate`` (default: the list of items).
    """

    def __init__(
        self,
        batches: Sequence[Any],
        *,
        shuffle: bool = True,
        seed: int = 0,
        batch_size: int | None = None,
        collate: Callable[[list[Any]], Any] | None = None,
        drop_last: bool = False,
    ) -> None:
        if len(batches) == 0:
            raise ValueError("BatchStream needs at least one batch, got an empty sequence")
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size is not None and drop_last and len(batches) < batch_size:
            raise ValueError(
                f"drop_last with batch_size={batch_size} leaves no batch of {len(batches)} items"
            )
        self.data = batches
        self.shuffle = shuffle
        self.seed = int(seed)
        self.batch_size = batch_size
        self.collate = collate
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0
        self._order: list[int] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.batch_size is None:
            return len(self.data)
        full, rest = divmod(len(self.data), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _epoch_order(self) -> list[int]:
        if self._order is None:
            n = len(self.data)
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
                self._order = torch.randperm(n, generator=gen).tolist()
            else:
                self._order = list(range(n))
        return self._order

    def __next__(self) -> Any:
        if self.position >= len(self):
            self.epoch += 1
            self.position = 0
            self._order = None
        order = self._epoch_order()
        i = self.position
        self.position += 1
        if self.batch_size is None:
            return self.data[order[i]]
        items = [self.data[j] for j in order[i * self.batch_size : (i + 1) * self.batch_size]]
        return self.collate(items) if self.collate is not None else items

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(
                f"batch stream state was saved with seed {state['seed']}, this stream has "
                f"seed {self.seed}"
            )
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order = None
