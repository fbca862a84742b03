"""The pieces of one optimizer step: gradient accumulation and the split across ranks.

For each objective that takes part in a step, the runner draws ``grad_accum`` batches
from its stream (the *micro-batches*; ``b`` items each in the usual case). Under a
distributed run every rank draws the same batches (the streams are seeded alike) and
takes its own contiguous share of each one (:func:`~moopt.runner.batches.piece_bounds`:
sizes differ by at most one item). So the schedule, the batches and the number of
optimizer steps are the same on every rank, and the *global* batch of a step is the
``grad_accum`` micro-batches together, whatever the number of ranks.

Each piece's loss is weighted by its share of the step's items before ``backward``: with
``N`` items in the step's micro-batches, a piece of ``m`` items on one of ``W`` ranks is
multiplied by ``m * W / N`` (gradients are then averaged over the ranks). For a loss that
is a mean over items, the accumulated gradient is exactly the gradient of the loss on all
``N`` items at once: ``k`` micro-batches of ``b`` equal one batch of ``k * b``. For a loss
that averages over something else (tokens of varying length), it is the item-weighted mean
of the micro-batch losses, the usual approximation.

A rank whose share of a micro-batch is empty (fewer items than ranks) computes the loss
of one item with weight 0, so that every rank runs the same forward and backward passes.
An objective without a batch stream (a full-batch loss) is computed once per step on every
rank.

Example:
    >>> import torch
    >>> from moopt.runner import BatchStream, TrainObjective
    >>> from moopt.runner.accumulation import step_pieces
    >>> spec = TrainObjective(lambda x: x.sum(), BatchStream([torch.ones(4), torch.ones(2)],
    ...                                                       shuffle=False))
    >>> [(len(p.batch), p.grad_weight) for p in step_pieces(spec, accum=2, rank=1, world=2)]
    [(2, 0.6666666666666666), (1, 0.3333333333333333)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moopt.runner.batches import BatchError, batch_len, piece_bounds, take_piece
from moopt.runner.task import TrainObjective


@dataclass
class Piece:
    """One forward/backward of a step on this rank.

    ``batch``: this rank's share of a micro-batch (``None`` for a full-batch objective).
    ``grad_weight``: the factor of its loss before ``backward``. ``log_weight``: the factor
    of its loss in the step's reported loss, which is the sum over pieces and ranks.
    """

    batch: Any
    grad_weight: float
    log_weight: float
    has_batch: bool = True


def step_pieces(spec: TrainObjective, *, accum: int, rank: int, world: int) -> list[Piece]:
    """Draw ``accum`` micro-batches of ``spec``'s stream and return this rank's pieces."""
    if spec.batches is None:
        return [Piece(None, 1.0, 1.0 / world, has_batch=False)]
    draws = [next(spec.batches) for _ in range(accum)]
    if accum == 1 and world == 1:
        return [Piece(draws[0], 1.0, 1.0)]
    try:
        sizes = [batch_len(b) for b in draws]
    except BatchError:
        if world > 1:
            raise
        return [Piece(b, 1.0 / accum, 1.0 / accum) for b in draws]  # cannot count: equal
    total = sum(sizes)
    if total == 0:
        raise BatchError("the micro-batches of one step hold no items")
    pieces = []
    for batch, n in zip(draws, sizes):
        start, stop = piece_bounds(n, world)[rank]
        m = stop - start
        if m == 0:
            # Fewer items than ranks: a weightless item keeps the ranks' passes in step.
            pieces.append(Piece(take_piece(batch, 0, 1), 0.0, 0.0))
        else:
            pieces.append(Piece(take_piece(batch, start, stop), m * world / total, m / total))
    return pieces
