"""Metric arithmetic against hand computation."""

from __future__ import annotations

import pytest
from moopt.tasks.safety.metrics import label_rates, rouge_l_recall


def test_label_rates_hand_count():
    labels = ["full_refusal"] * 3 + ["partial_refusal"] * 2 + ["full_compliance"] * 5
    r = label_rates(labels)
    assert r == {"refusal_rate": 0.5, "full_refusal_rate": 0.3, "partial_refusal_rate": 0.2,
                 "compliance_rate": 0.5}


def test_label_rates_bad_input():
    with pytest.raises(ValueError, match="empty"):
        label_rates([])
    with pytest.raises(ValueError, match="'nope'"):
        label_rates(["full_refusal", "nope"])


def test_rouge_l_recall_by_hand():
    # reference 5 tokens; LCS with prediction = "the capital is paris" -> 4 tokens.
    assert rouge_l_recall("the capital is Paris", "The capital of France is Paris.") == \
        pytest.approx(4 / 6)
    assert rouge_l_recall("paris", "Paris") == 1.0
    assert rouge_l_recall("", "Paris") == 0.0
    # Order matters for LCS: reversed prediction shares only one token in sequence.
    assert rouge_l_recall("c b a", "a b c") == pytest.approx(1 / 3)
