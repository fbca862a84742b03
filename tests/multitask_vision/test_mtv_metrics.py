"""Metrics against hand-computed values and independent references."""

from __future__ import annotations

import pytest
import torch
from moopt.tasks.multitask_vision.metrics import accuracy, binary_f1, delta_m, mean_rank


def test_delta_m_hand_computed():
    # Task a: 0.92 vs 0.90 -> +2.2222% better -> contributes -2.2222.
    # Task b: 0.76 vs 0.80 -> -5% worse -> contributes +5. Mean = 1.38889.
    got = delta_m({"a": 0.92, "b": 0.76}, {"a": 0.90, "b": 0.80})
    assert got == pytest.approx(((-(0.92 - 0.90) / 0.90) + (0.80 - 0.76) / 0.80) / 2 * 100)
    assert got == pytest.approx(1.3888889, rel=1e-6)


def test_delta_m_lower_is_better_metric_flips_sign():
    # An error metric (lower is better): 0.1 vs 0.2 is a 50% improvement -> -50.
    assert delta_m({"err": 0.1}, {"err": 0.2}, {"err": False}) == pytest.approx(-50.0)
    mixed = delta_m({"acc": 0.5, "err": 0.3}, {"acc": 0.4, "err": 0.2},
                    {"acc": True, "err": False})
    assert mixed == pytest.approx((-25.0 + 50.0) / 2)


def test_delta_m_equal_to_reference_is_zero_and_errors():
    assert delta_m({"a": 0.7, "b": 0.3}, {"a": 0.7, "b": 0.3}) == 0.0
    with pytest.raises(ValueError, match="same tasks"):
        delta_m({"a": 0.7}, {"b": 0.7})
    with pytest.raises(ValueError, match="'a'"):
        delta_m({"a": 0.7}, {"a": 0.0})


def test_mean_rank_with_ties_and_directions():
    results = {
        "shared": {"left": 0.90, "right": 0.80, "err": 0.3},
        "decoupled": {"left": 0.95, "right": 0.80, "err": 0.1},
        "bridged": {"left": 0.85, "right": 0.85, "err": 0.2},
    }
    ranks = mean_rank(results, {"left": True, "right": True, "err": False})
    # left: decoupled 1, shared 2, bridged 3; right: bridged 1, others tie at 2.5;
    # err (lower better): decoupled 1, bridged 2, shared 3.
    assert ranks == pytest.approx({"shared": (2 + 2.5 + 3) / 3, "decoupled": (1 + 2.5 + 1) / 3,
                                   "bridged": (3 + 1 + 2) / 3})


def test_accuracy_and_f1_against_hand_counts():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]])
    labels = torch.tensor([0, 1, 1, 1])
    assert accuracy(logits, labels) == 0.5
    pred = logits.argmax(-1)  # [0, 1, 0, 0]: TP = 1, FP = 0, FN = 2
    assert binary_f1(pred, labels) == pytest.approx(2 * 1 / (2 * 1 + 0 + 2))
    # No positives anywhere: F1 defined as 0 (sklearn zero_division=0).
    assert binary_f1(torch.zeros(3), torch.zeros(3)) == 0.0


def test_f1_matches_precision_recall_formula_on_random_data():
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 2, (500,), generator=gen)
    labels = torch.randint(0, 2, (500,), generator=gen)
    tp = float(((pred == 1) & (labels == 1)).sum())
    precision = tp / float((pred == 1).sum())
    recall = tp / float((labels == 1).sum())
    assert binary_f1(pred, labels) == pytest.approx(2 * precision * recall / (precision + recall))
