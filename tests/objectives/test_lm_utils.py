"""sequence_nll and friends against float64 loop references and torch's own CE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from moopt.objectives.lm_utils import (
    answer_cross_entropy,
    mean_token_nll,
    sequence_nll,
    sub_batch,
    token_logprobs,
)

from .fakes import FixedLogits, make_batch, seq_nll_np

LABELS = [[-100, -100, 3, 1, 4], [-100, 2, 0, -100, -100], [-100, -100, -100, -100, 5]]


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 6, generator=g, dtype=torch.float64) * 2
    return logits, make_batch(LABELS)


@pytest.mark.parametrize("wrap", [False, True])
def test_sequence_nll_matches_loop_reference(setup, wrap):
    logits, batch = setup
    nll, n = sequence_nll(FixedLogits(logits, wrap=wrap), batch)
    ref, cnt = seq_nll_np(logits.numpy(), batch["labels"].numpy())
    assert nll.shape == (3,) and n.shape == (3,)
    np.testing.assert_allclose(nll.detach().numpy(), ref, rtol=1e-12)
    np.testing.assert_array_equal(n.numpy(), cnt)
    np.testing.assert_array_equal(n.numpy(), [3, 2, 1])


def test_answer_ce_is_torch_shifted_ce(setup):
    logits, batch = setup
    model = FixedLogits(logits)
    expect = F.cross_entropy(
        logits[:, :-1].reshape(-1, 6), batch["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.allclose(answer_cross_entropy(model, batch), expect, rtol=1e-12)
    ref, cnt = seq_nll_np(logits.numpy(), batch["labels"].numpy())
    np.testing.assert_allclose(mean_token_nll(model, batch).detach().numpy(), ref / cnt)


def test_token_logprobs_masked_zero(setup):
    logits, batch = setup
    logp, mask = token_logprobs(FixedLogits(logits), batch)
    assert logp.shape == (3, 4) and mask.dtype == torch.bool
    assert torch.all(logp[~mask] == 0) and torch.all(logp[mask] < 0)


def test_half_precision_logits_upcast(setup):
    logits, batch = setup
    nll, _ = sequence_nll(FixedLogits(logits.to(torch.bfloat16)), batch)
    assert nll.dtype == torch.float32


def test_no_answer_tokens():
    batch = make_batch([[-100, -100, -100]])
    model = FixedLogits(torch.zeros(1, 3, 4))
    nll, n = sequence_nll(model, batch)
    assert nll.detach()[0].item() == 0.0 and int(n[0]) == 0
    with pytest.raises(ValueError, match="no answer token"):
        answer_cross_entropy(model, batch)


def test_bad_inputs_named():
    model = FixedLogits(torch.zeros(1, 3, 4))
    with pytest.raises(KeyError, match="labels"):
        sequence_nll(
            model,
            {"input_ids": torch.zeros(1, 3, dtype=torch.long), "attention_mask": torch.ones(1, 3)},
        )
    with pytest.raises(TypeError, match="returned str"):
        sequence_nll(lambda **kw: "oops", make_batch([[-100, 1, 2]]))
    with pytest.raises(ValueError, match=r"logits of shape \(1, 3\)"):
        sequence_nll(lambda **kw: torch.zeros(1, 3), make_batch([[-100, 1, 2]]))
    b = make_batch([[-100, 1, 2], [-100, 1, 2]])
    with pytest.raises(KeyError, match="needs batch\\['idk'\\]"):
        sub_batch(b, "idk", "dpo")
    b["idk"] = make_batch([[-100, 1, 2]])
    with pytest.raises(ValueError, match="1 sequences but the batch has 2"):
        sub_batch(b, "idk", "dpo")
