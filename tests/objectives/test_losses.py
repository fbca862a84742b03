"""Every built-in loss against a float64 numpy/scipy re-derivation on a tiny vocabulary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import rel_entr

from moopt.objectives import (
    MissingReferenceModelError,
    ObjectiveContext,
    get_objective,
)

from .fakes import (
    FixedLogits,
    answer_rows_np,
    log_sigmoid_np,
    log_softmax_np,
    make_batch,
    seq_nll_np,
)

V = 5
LABELS = [[-100, -100, 3, 1, 4], [-100, 2, 0, 1, -100]]
IDK_LABELS = [[-100, 4, 4, -100, -100], [-100, -100, 0, 2, 3]]


def rand(seed: int, shape=(2, 5, V), scale=1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


@pytest.fixture
def case():
    """Model, reference, batch (with idk) and the numpy copies of their logits."""
    batch = make_batch(LABELS)
    batch["idk"] = make_batch(IDK_LABELS)
    # The fake ignores inputs, so the IDK pass needs its own logits: route by label tensor.
    theta = {"main": rand(1), "idk": rand(2)}
    ref = {"main": rand(3), "idk": rand(4)}
    return batch, theta, ref


class Routed(torch.nn.Module):
    """Returns the 'main' or 'idk' logits depending on which input_ids it is given."""

    def __init__(self, logits: dict[str, torch.Tensor], batch) -> None:
        super().__init__()
        self.main = FixedLogits(logits["main"])
        self.idk = FixedLogits(logits["idk"])
        self._idk_ids = batch["idk"]["input_ids"]

    def forward(self, input_ids, attention_mask=None):
        if input_ids is self._idk_ids:
            return self.idk(input_ids)
        return self.main(input_ids)


def np_nll(logits: torch.Tensor, labels) -> tuple[np.ndarray, np.ndarray]:
    return seq_nll_np(logits.numpy(), np.asarray(labels))


def value(name, batch, theta, ref=None, **hp) -> float:
    model = Routed(theta, batch)
    ctx = ObjectiveContext(ref_model=Routed(ref, batch) if ref is not None else None)
    out = get_objective(name, **hp)(model, batch, ctx)
    assert out.dim() == 0 and out.dtype == torch.float64
    return out.item()


def pooled_ce(logits, labels) -> float:
    nll, n = np_nll(logits, labels)
    return nll.sum() / n.sum()


def test_gd_sft_ga(case):
    batch, theta, _ = case
    expect = pooled_ce(theta["main"], LABELS)
    assert value("gd", batch, theta) == pytest.approx(expect, rel=1e-12)
    assert value("sft", batch, theta) == pytest.approx(expect, rel=1e-12)
    assert value("ga", batch, theta) == pytest.approx(-expect, rel=1e-12)


def test_idk(case):
    batch, theta, _ = case
    expect = pooled_ce(theta["idk"], IDK_LABELS)
    assert value("idk", batch, theta) == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_npo(case, beta):
    batch, theta, ref = case
    d = np_nll(theta["main"], LABELS)[0] - np_nll(ref["main"], LABELS)[0]
    expect = -(2 / beta) * log_sigmoid_np(beta * d).mean()
    kw = {} if beta == 0.1 else {"beta": beta}
    assert value("npo", batch, theta, ref, **kw) == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize(("beta", "gamma"), [(2.5, 0.0), (1.3, 0.4)])
def test_simnpo(case, beta, gamma):
    batch, theta, _ = case
    nll, n = np_nll(theta["main"], LABELS)
    expect = -(2 / beta) * log_sigmoid_np(beta * (nll / n - gamma)).mean()
    kw = {} if beta == 2.5 else {"beta": beta, "gamma": gamma}
    assert value("simnpo", batch, theta, **kw) == pytest.approx(expect, rel=1e-12)


def test_dpo(case):
    batch, theta, ref = case
    beta = 0.1
    logp = {k: -np_nll(theta[k], LABELS if k == "main" else IDK_LABELS)[0] for k in theta}
    logp_ref = {k: -np_nll(ref[k], LABELS if k == "main" else IDK_LABELS)[0] for k in ref}
    margin = (logp["idk"] - logp["main"]) - (logp_ref["idk"] - logp_ref["main"])
    expect = -(2 / beta) * log_sigmoid_np(beta * margin).mean()
    assert value("dpo", batch, theta, ref) == pytest.approx(expect, rel=1e-12)


def test_ap(case):
    batch, theta, _ = case
    beta = 0.1
    d = np_nll(theta["idk"], IDK_LABELS)[0] - np_nll(theta["main"], LABELS)[0]
    expect = -(1 / beta) * log_sigmoid_np(beta * d).mean()
    assert value("ap", batch, theta) == pytest.approx(expect, rel=1e-12)
    assert value("ap", batch, theta, beta=0.5) != pytest.approx(expect, rel=1e-6)


def test_me_is_kl_from_uniform(case):
    batch, theta, _ = case
    p = np.exp(answer_rows_np(theta["main"].numpy(), np.asarray(LABELS)))
    u = np.full_like(p, 1.0 / V)
    expect = rel_entr(u, p).sum(axis=-1).mean()  # scipy: sum u log(u/p)
    assert p.shape[0] == 6  # 3 + 3 answer tokens
    assert value("me", batch, theta) == pytest.approx(expect, rel=1e-12)
    # uniform predictions have zero ME loss
    flat = {"main": torch.zeros(2, 5, V, dtype=torch.float64), "idk": theta["idk"]}
    assert value("me", batch, flat) == pytest.approx(0.0, abs=1e-15)


def test_kl_retain(case):
    batch, theta, ref = case
    p = np.exp(answer_rows_np(theta["main"].numpy(), np.asarray(LABELS)))
    q = np.exp(answer_rows_np(ref["main"].numpy(), np.asarray(LABELS)))
    expect = rel_entr(q, p).sum(axis=-1).mean()  # KL(p_ref || p_theta)
    assert value("kl", batch, theta, ref) == pytest.approx(expect, rel=1e-12)
    assert value("kl", batch, theta, theta) == pytest.approx(0.0, abs=1e-14)


def test_ce_classification():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 3, 2, 1, 0])
    lin = torch.nn.Linear(3, 4).double()
    out = get_objective("ce")(lin, {"x": x, "y": y})
    z = lin(x).detach().numpy()
    expect = -log_softmax_np(z)[np.arange(6), y.numpy()].mean()
    assert out.item() == pytest.approx(expect, rel=1e-12)
    with pytest.raises(KeyError, match="needs batch\\['y'\\]"):
        get_objective("ce")(lin, {"x": x})


def test_ga_gradient_is_minus_gd(case):
    batch, theta, _ = case
    grads = {}
    for name in ("ga", "gd"):
        model = Routed(theta, batch)
        get_objective(name)(model, batch).backward()
        grads[name] = model.main.logits.grad.clone()
    assert grads["gd"].abs().sum() > 0
    torch.testing.assert_close(grads["ga"], -grads["gd"], rtol=0, atol=0)
    # GD descends the NLL: a small step along -grad lowers the CE
    step = Routed({"main": theta["main"] - 0.1 * grads["gd"], "idk": theta["idk"]}, batch)
    assert get_objective("gd")(step, batch) < get_objective("gd")(Routed(theta, batch), batch)


@pytest.mark.parametrize("name", ["npo", "dpo", "kl"])
def test_reference_required(case, name):
    batch, theta, _ = case
    with pytest.raises(MissingReferenceModelError, match=f"'{name}' needs a reference model"):
        get_objective(name)(Routed(theta, batch), batch, ObjectiveContext())
    with pytest.raises(MissingReferenceModelError, match=name):
        get_objective(name)(Routed(theta, batch), batch)


@pytest.mark.parametrize("name", ["npo", "dpo", "kl"])
def test_reference_gets_no_gradient(case, name):
    batch, theta, ref = case
    model, ref_model = Routed(theta, batch), Routed(ref, batch)
    get_objective(name)(model, batch, ObjectiveContext(ref_model=ref_model)).backward()
    assert model.main.logits.grad is not None and model.main.logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in ref_model.parameters())


def test_npo_at_reference_and_limits(case):
    batch, theta, _ = case
    # theta == ref: every sigmoid is 1/2
    assert value("npo", batch, theta, theta) == pytest.approx(2 / 0.1 * math.log(2), rel=1e-12)
    # NPO -> GA-like for small beta: d NPO / d theta ~ gradient of mean summed NLL * -1
    model, ref = Routed(theta, batch), Routed(theta, batch)
    get_objective("npo", beta=1e-6)(model, batch, ObjectiveContext(ref_model=ref)).backward()
    g_npo = model.main.logits.grad.clone()
    model2 = Routed(theta, batch)
    from moopt.objectives.lm_utils import sequence_nll

    (-sequence_nll(model2, batch)[0].mean()).backward()
    torch.testing.assert_close(g_npo, model2.main.logits.grad, rtol=1e-5, atol=1e-9)


def test_losses_need_idk_key(case):
    batch, theta, ref = case
    plain = {k: v for k, v in batch.items() if k != "idk"}
    for name, r in (("idk", None), ("ap", None), ("dpo", ref)):
        ctx = ObjectiveContext(ref_model=Routed(ref, batch) if r is not None else None)
        with pytest.raises(KeyError, match=f"objective '{name}' needs batch\\['idk'\\]"):
            get_objective(name)(Routed(theta, batch), plain, ctx)
