"""Closed-form values on a 2-token vocabulary where p = (1/4, 3/4) at every position."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moopt.objectives import ObjectiveContext, get_objective
from moopt.objectives.lm_utils import answer_cross_entropy, sequence_nll

from .fakes import FixedLogits, make_batch, seq_nll_np

# logits (0, log 3) -> softmax (1/4, 3/4)
LOGITS = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).expand(1, 4, 2).clone()
BATCH = make_batch([[-100, 1, 1, 0]])  # answer tokens: 1, 1, 0
NLL = 2 * math.log(4 / 3) + math.log(4)  # -log(3/4) - log(3/4) - log(1/4)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def run(name, ref_logits=None, **hp) -> float:
    ctx = ObjectiveContext(ref_model=None if ref_logits is None else FixedLogits(ref_logits))
    return get_objective(name, **hp)(FixedLogits(LOGITS), BATCH, ctx).item()


def test_by_hand():
    assert run("gd") == pytest.approx(NLL / 3, rel=1e-12)
    assert run("ga") == pytest.approx(-NLL / 3, rel=1e-12)
    # KL(U || p) = 1/2 log(1/2 / 1/4) + 1/2 log(1/2 / 3/4) = 1/2 log(4/3)
    assert run("me") == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)
    assert run("simnpo") == pytest.approx(-(2 / 2.5) * math.log(sig(2.5 * NLL / 3)), rel=1e-12)
    # reference uniform: NLL_ref = 3 log 2
    uniform = torch.zeros(1, 4, 2, dtype=torch.float64)
    d = NLL - 3 * math.log(2)
    assert run("npo", uniform) == pytest.approx(-(2 / 0.1) * math.log(sig(0.1 * d)), rel=1e-12)
    # KL(uniform || p) per position = 1/2 log(1/2 / 1/4) + 1/2 log(1/2 / 3/4), as ME here
    assert run("kl", uniform) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    b=st.integers(1, 3),
    s=st.integers(2, 6),
    v=st.integers(2, 5),
    seed=st.integers(0, 10_000),
    p_answer=st.floats(0.0, 1.0),
)
def test_sequence_nll_property(b, s, v, seed, p_answer):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, s, v, generator=g, dtype=torch.float64) * 3
    tokens = torch.randint(0, v, (b, s), generator=g)
    scored = torch.rand(b, s, generator=g) < p_answer
    labels = torch.where(scored, tokens, torch.full_like(tokens, -100)).tolist()
    batch = make_batch(labels)
    nll, n = sequence_nll(FixedLogits(logits), batch)
    ref, cnt = seq_nll_np(logits.numpy(), batch["labels"].numpy())
    assert n.tolist() == cnt.tolist()
    assert torch.allclose(nll, torch.from_numpy(ref), rtol=1e-12, atol=1e-12)
    if cnt.sum() > 0:
        ce = answer_cross_entropy(FixedLogits(logits), batch).item()
        assert ce == pytest.approx(ref.sum() / cnt.sum(), rel=1e-12)
