"""Every language-model objective on a real (tiny) HF causal LM and real encoded batches."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from moopt.tasks.common.batching import collate
from moopt.tasks.common.qa import encode_qa_pairs

from moopt.objectives import ObjectiveContext, get_objective, list_objectives

PAIRS = [
    ("Who wrote The Glass Orchard?", "Mira Vantesh wrote The Glass Orchard."),
    ("What genre does Ola Brenn write?", "Ola Brenn writes detective fiction."),
]
IDK = ["I don't know.", "That is not something I can answer."]
LM_OBJECTIVES = sorted(set(list_objectives()) - {"ce"})


@pytest.fixture(scope="module")
def batch(tok):
    b = collate(encode_qa_pairs(tok, PAIRS, max_length=64), tok.pad_token_id)
    idk_pairs = [(q, a) for (q, _), a in zip(PAIRS, IDK)]
    b["idk"] = collate(encode_qa_pairs(tok, idk_pairs, max_length=64), tok.pad_token_id)
    return b


@pytest.mark.parametrize("name", LM_OBJECTIVES)
def test_objective_descends_on_real_lm(name, gpt2, batch):
    model = copy.deepcopy(gpt2).double()
    ref = copy.deepcopy(gpt2).double().eval()
    model.eval()  # no dropout: the loss is a deterministic function of the weights
    torch.manual_seed(0)
    with torch.no_grad():  # move away from the reference so KL/NPO/DPO have a gradient
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    obj = get_objective(name)
    ctx = ObjectiveContext(ref_model=ref)
    loss = obj(model, batch, ctx)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm2 = sum(float((g * g).sum()) for g in grads)
    assert norm2 > 0
    with torch.no_grad():  # a small gradient step lowers the loss (first-order check)
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(1e-3 / math.sqrt(norm2) * p.grad)
        assert obj(model, batch, ctx) < loss


def test_npo_at_reference_on_real_lm(gpt2, batch):
    gpt2.eval()
    with torch.no_grad():
        loss = get_objective("npo")(gpt2, batch, ObjectiveContext(ref_model=gpt2))
        kl = get_objective("kl")(gpt2, batch, ObjectiveContext(ref_model=gpt2))
    assert loss.item() == pytest.approx(2 / 0.1 * math.log(2), rel=1e-6)
    assert abs(kl.item()) < 1e-6
