"""BatchStream: every item once per epoch, seeded order, exact resumption."""

from __future__ import annotations

import pytest

from moopt.runner.data import BatchStream


def test_each_epoch_is_a_permutation_and_epochs_differ():
    s = BatchStream(list(range(10)), seed=3)
    e0 = [next(s) for _ in range(10)]
    e1 = [next(s) for _ in range(10)]
    assert sorted(e0) == sorted(e1) == list(range(10))
    assert e0 != e1  # reshuffled (fixed seed, so this is deterministic)
    again = BatchStream(list(range(10)), seed=3)
    assert [next(again) for _ in range(10)] == e0


def test_resume_mid_epoch_gives_the_same_sequence():
    a = BatchStream(list(range(7)), seed=1)
    ref = [next(a) for _ in range(20)]
    b = BatchStream(list(range(7)), seed=1)
    head = [next(b) for _ in range(9)]
    c = BatchStream(list(range(7)), seed=1)
    c.load_state_dict(b.state_dict())
    assert head + [next(c) for _ in range(11)] == ref
    with pytest.raises(ValueError, match="seed 1.*seed 2"):
        BatchStream(list(range(7)), seed=2).load_state_dict(b.state_dict())


def test_batch_size_groups_and_collates():
    s = BatchStream(list(range(5)), shuffle=False, batch_size=2, collate=sum)
    assert len(s) == 3
    assert [next(s) for _ in range(4)] == [1, 5, 4, 1]
    d = BatchStream(list(range(5)), shuffle=False, batch_size=2, drop_last=True)
    assert len(d) == 2 and [next(d) for _ in range(3)] == [[0, 1], [2, 3], [0, 1]]


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match="empty"):
        BatchStream([])
