"""collate and length-bucketed batching."""

from __future__ import annotations

import pytest
import torch
from moopt.tasks.common.batching import (
    BucketedBatchSampler,
    collate,
    iterate_batches,
    length_bucketed_batches,
)
from moopt.tasks.common.qa import EncodedQA
from torch.utils.data import DataLoader

LENGTHS = [(7 * i) % 50 + 1 for i in range(103)]


def ex(n: int, prompt: int = 1) -> EncodedQA:
    ids = list(range(10, 10 + n))
    return EncodedQA(ids, [-100] * prompt + ids[prompt:], prompt)


def test_collate_right_and_left():
    b = collate([ex(3), ex(5, prompt=2)], pad_token_id=0)
    assert b["input_ids"].tolist() == [[10, 11, 12, 0, 0], [10, 11, 12, 13, 14]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert b["labels"].tolist() == [[-100, 11, 12, -100, -100], [-100, -100, 12, 13, 14]]
    left = collate([ex(3), ex(5)], pad_token_id=9, padding_side="left")
    assert left["input_ids"][0].tolist() == [9, 9, 10, 11, 12]
    assert left["labels"][0].tolist() == [-100, -100, -100, 11, 12]
    assert all(t.dtype == torch.long for t in b.values())


def test_collate_errors():
    with pytest.raises(ValueError, match="padding_side must be .* got 'top'"):
        collate([ex(2)], 0, padding_side="top")
    with pytest.raises(ValueError, match="no examples"):
        collate([], 0)
    with pytest.raises(ValueError, match="pad_token_id is None"):
        collate([ex(2)], None)
    with pytest.raises(ValueError, match="example 0 has 2 input_ids but 1 labels"):
        collate([EncodedQA([1, 2], [1], 0)], 0)


def test_partition_and_determinism():
    a = length_bucketed_batches(LENGTHS, 8, seed=1)
    assert sorted(i for b in a for i in b) == list(range(len(LENGTHS)))
    assert all(len(b) == 8 for b in a if len(b) != len(LENGTHS) % 8)
    assert sum(len(b) != 8 for b in a) == 1
    assert a == length_bucketed_batches(LENGTHS, 8, seed=1)
    assert a != length_bucketed_batches(LENGTHS, 8, seed=2)
    dropped = length_bucketed_batches(LENGTHS, 8, seed=1, drop_last=True)
    assert len(dropped) == len(LENGTHS) // 8 and all(len(b) == 8 for b in dropped)


def _padded_tokens(batches) -> int:
    return sum(len(b) * max(LENGTHS[i] for i in b) for b in batches)


def test_bucketing_cuts_padding():
    bucketed = length_bucketed_batches(LENGTHS, 8, seed=0, bucket_batches=4)
    # the same batch size without bucketing: consecutive indices of a random permutation
    perm = torch.randperm(len(LENGTHS), generator=torch.Generator().manual_seed(0)).tolist()
    plain = [perm[i : i + 8] for i in range(0, len(perm), 8)]
    assert _padded_tokens(bucketed) < 0.75 * _padded_tokens(plain)
    assert _padded_tokens(bucketed) < len(LENGTHS) * max(LENGTHS)  # not the global longest


def test_no_shuffle_sorted():
    assert length_bucketed_batches([5, 1, 4, 2, 4], 2, seed=0, shuffle=False) == [
        [0, 2],
        [4, 3],
        [1],
    ]


def test_sampler_epochs_and_dataloader():
    s = BucketedBatchSampler(LENGTHS, 8, seed=3)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert e0 != e1 and sorted(map(tuple, e0)) != sorted(map(tuple, e1))
    s.set_epoch(0)
    assert list(s) == e0 and len(s) == len(e0)
    data = [ex(n) for n in LENGTHS]
    loader = DataLoader(data, batch_sampler=s, collate_fn=lambda b: collate(b, 0))
    widths = [b["input_ids"].shape[1] for b in loader]
    assert len(widths) == len(e0) and max(widths) == max(LENGTHS)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        BucketedBatchSampler(LENGTHS, 0)
    with pytest.raises(ValueError, match="bucket_batches must be an int >= 1, got 0"):
        length_bucketed_batches(LENGTHS, 2, seed=0, bucket_batches=0)


def test_iterate_batches_epoch_seeding():
    data = [ex(n) for n in LENGTHS[:20]]
    a = [b["input_ids"] for b in iterate_batches(data, 4, pad_token_id=0, seed=5, epoch=1)]
    b = [b["input_ids"] for b in iterate_batches(data, 4, pad_token_id=0, seed=6, epoch=0)]
    assert len(a) == 5 and all(torch.equal(x, y) for x, y in zip(a, b))
    assert sum(int((x != 0).sum()) for x in a) == sum(LENGTHS[:20])
