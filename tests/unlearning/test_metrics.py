"""TOFU metrics: arithmetic against hand values and scipy, and the model-facing evaluation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from moopt.tasks.unlearning import metrics as M
from moopt.tasks.unlearning.data import QAItem, UnlearningData
from moopt.tasks.unlearning.evaluation import evaluate_unlearning, mean_answer_losses
from scipy.stats import hmean, ks_2samp
from torch import nn

LN2, LN4, LN8 = math.log(2), math.log(4), math.log(8)

# ---------------------------------------------------------------- pure functions


def test_answer_probabilities() -> None:
    np.testing.assert_allclose(M.answer_probabilities([0.0, LN2, LN4]), [1.0, 0.5, 0.25])
    with pytest.raises(ValueError, match="non-finite"):
        M.answer_probabilities([1.0, float("nan")])


def test_normalized_probabilities_by_hand() -> None:
    # p_true = 1/2, perturbed 1/4 + 1/4 -> 0.5 / (0.5 + 0.5); second item: 1/2 / (1/2 + 1/8).
    got = M.normalized_probabilities([LN2, LN2], [[LN4, LN4], [LN8]])
    np.testing.assert_allclose(got, [0.5, 0.5 / 0.625], rtol=1e-12)
    # Extreme losses stay finite (log-space), where exp(-1000) would underflow to 0 / 0.
    far = M.normalized_probabilities([1000.0, 0.0], [[1001.0], [1000.0]])
    np.testing.assert_allclose(far, [1 / (1 + math.exp(-1)), 1.0])
    with pytest.raises(ValueError, match="2 items, expected 1"):
        M.normalized_probabilities([1.0], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="item 0 has no perturbed"):
        M.normalized_probabilities([1.0], [[]])


def test_truth_ratios_by_hand() -> None:
    got = M.truth_ratios([1.0, LN4], [[2.0, 3.0], [LN8, LN8, LN8]])
    np.testing.assert_allclose(got, [math.exp(1.5), 2.0], rtol=1e-12)


def test_truth_ratio_scores_by_hand() -> None:
    r = [2.0, 0.5, 1.0]
    # utility: max(0, 1 - 1/R) = 0.5, 0, 0; forget: min(R, 1/R) = 0.5, 0.5, 1.
    assert M.truth_ratio_score(r) == pytest.approx(0.5 / 3)
    assert M.truth_ratio_score(r, forget=True) == pytest.approx(2.0 / 3)
    assert M.truth_ratio_score([math.inf, 0.0]) == pytest.approx(0.5)
    assert M.truth_ratio_score([math.inf, 0.0], forget=True) == 0.0
    with pytest.raises(ValueError, match="truth ratios"):
        M.truth_ratio_score([-1.0])


def test_forget_quality_is_scipy_ks_pvalue() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(0, 1, 40), rng.lognormal(0.3, 1, 40)
    assert M.forget_quality(a, b) == ks_2samp(a, b).pvalue
    assert M.forget_quality(a, a) == pytest.approx(1.0)
    assert M.forget_quality(a, a + 100) < 1e-10
    with pytest.raises(ValueError, match="retain_model_ratios"):
        M.forget_quality(a, [])


def test_harmonic_mean() -> None:
    assert M.harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    vals = [0.3, 0.9, 0.45, 0.7]
    assert M.harmonic_mean(vals) == pytest.approx(hmean(vals), rel=1e-12)
    # It is scipy's, to the last bit (a hand-written n / sum(1/v) differs in 58 of 200 here).
    rng = np.random.default_rng(0)
    for _ in range(200):
        v = rng.uniform(0.01, 1.0, size=9)
        assert M.harmonic_mean(v) == float(hmean(v))
    assert M.harmonic_mean([0.5, 0.0]) == 0.0
    with pytest.raises(ValueError, match="-0.1"):
        M.harmonic_mean([0.5, -0.1])


def test_model_utility_uses_the_nine_numbers() -> None:
    values = {f"{s}/{p}": 0.1 * (i + 1) for i, (s, p) in enumerate(
        (s, p) for s in M.UTILITY_SETS for p in M.UTILITY_PARTS)}
    values["forget/probability"] = 1e-9  # not part of utility
    expected = 9 / sum(1 / (0.1 * k) for k in range(1, 10))
    assert M.model_utility(values) == pytest.approx(expected, rel=1e-12)
    del values["world_facts/rouge_l"]
    with pytest.raises(KeyError, match="world_facts/rouge_l"):
        M.model_utility(values)


def test_rouge_l_recall_by_hand() -> None:
    got = M.rouge_l_recalls(
        ["the cat is on a mat", "cat run", "", "The Cat sat on the mat."],
        ["the cat sat on the mat", "The cats are running", "anything", "the cat sat on the mat"],
    )
    # LCS(the cat sat on the mat | the cat is on a mat) = the cat on mat: 4 of 6 tokens.
    # Stemming: cats -> cat, running -> run: 2 of 4 reference tokens. Case and
    # punctuation are ignored by the tokenizer.
    np.testing.assert_allclose(got, [4 / 6, 2 / 4, 0.0, 1.0])


# ---------------------------------------------------------------- model-facing evaluation

# Answers are made of words; every word maps to one token id; the fake model gives token id
# k a fixed probability whatever the context, so the mean answer NLL is known in advance.
TOKEN_PROB = {0: 0.0625, 1: 0.5, 2: 0.25, 3: 0.125}  # token 0: question and padding
KIND_TOKEN = {"T": 1, "P": 2, "X": 3}  # answer words start with T(rue), P(araphrase), X


class ContextFree(nn.Module):
    """Same next-token distribution at every position (``TOKEN_PROB`` padded to 8 tokens)."""

    def __init__(self) -> None:
        super().__init__()
        probs = torch.full((8,), (1 - sum(TOKEN_PROB.values())) / 4, dtype=torch.float64)
        for k, p in TOKEN_PROB.items():
            probs[k] = p
        self.logits = nn.Parameter(probs.log())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.logits.expand(*input_ids.shape, -1)


def word_batch(questions: Sequence[str], answers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Question words -> token 0, answer words -> token by first letter; right padding."""
    seqs = [[0] * len(q.split()) + [KIND_TOKEN[w[0]] for w in a.split()]
            for q, a in zip(questions, answers)]
    n = max(map(len, seqs))
    ids = torch.zeros(len(seqs), n, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (q, s) in enumerate(zip(questions, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, len(q.split()): len(s)] = ids[i, len(q.split()): len(s)]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _item(i: int, para: bool, n_words: int) -> QAItem:
    return QAItem(
        question=f"question number {i}?",
        answer=" ".join(["T"] * n_words),
        paraphrased_answer=" ".join(["P"] * (n_words + 1)) if para else None,
        perturbed_answers=[" ".join(["X"] * (n_words + j)) for j in range(3)],
    )


def fake_data() -> UnlearningData:
    with_para = [_item(i, True, 1 + i % 3) for i in range(6)]
    no_para = [_item(i, False, 1 + i % 2) for i in range(4)]
    return UnlearningData(
        forget=with_para[:2], retain=with_para[2:], forget_eval=with_para[:2],
        retain_eval=with_para[2:], real_authors_eval=no_para[:2], world_facts_eval=no_para[2:],
    )


def half_right(questions: Sequence[str]) -> list[str]:
    """Greedy-answer stand-in: every answer has ROUGE-L recall 1 on even items, 0 on odd."""
    return ["T T T" if int(q.split()[2].rstrip("?")) % 2 == 0 else "nothing" for q in questions]


def test_evaluate_unlearning_on_fixed_nlls() -> None:
    model = ContextFree().train()
    retain_model = [1.0, 3.0]
    out = evaluate_unlearning(model, None, fake_data(), retain_model, batch_fn=word_batch,
                              generate_fn=half_right, batch_size=3)
    m = out.metrics
    assert model.training  # mode restored
    # L_true = ln 2, L_para = ln 4, L_pert = ln 8 for every item whatever its length.
    assert out.forget_truth_ratios == pytest.approx([2.0, 2.0], rel=1e-12)
    assert m["forget/probability"] == pytest.approx(0.5) == m["retain/probability"]
    assert m["forget/loss"] == pytest.approx(LN2)
    assert m["forget/truth_ratio"] == pytest.approx(0.5)  # min(2, 1/2)
    assert m["retain/truth_ratio"] == pytest.approx(0.5)  # 1 - 1/2
    # Without paraphrase the true answer is the base: R = exp(ln 8 - ln 2) = 4.
    assert m["real_authors/truth_ratio"] == pytest.approx(0.75)
    # p_true / (p_true + 3 p_pert) = 0.5 / (0.5 + 0.375).
    assert m["world_facts/probability"] == pytest.approx(0.5 / 0.875)
    # Retain items 2..5: even ones answered right. Real-authors 0, 1 and world facts 0, 1.
    assert m["retain/rouge_l"] == pytest.approx(0.5)
    assert m["forget/rouge_l"] == pytest.approx(0.5)
    nine = [0.5, 0.5, 0.5, 0.5 / 0.875, 0.5, 0.75, 0.5 / 0.875, 0.5, 0.75]
    assert m["model_utility"] == pytest.approx(hmean(nine), rel=1e-12)
    assert m["forget_quality"] == pytest.approx(ks_2samp([2.0, 2.0], retain_model).pvalue)
    assert out.answers["retain"][0] == "T T T"


def test_evaluate_unlearning_options() -> None:
    out = evaluate_unlearning(ContextFree(), None, fake_data(), sets=["forget", "retain"],
                              rouge=False, batch_fn=word_batch)
    assert "forget_quality" not in out.metrics and "model_utility" not in out.metrics
    assert not any(k.endswith("rouge_l") for k in out.metrics)
    assert {k.split("/")[0] for k in out.metrics} == {"forget", "retain"}
    with pytest.raises(ValueError, match="'test'"):
        evaluate_unlearning(ContextFree(), None, fake_data(), sets=["test"], batch_fn=word_batch)
    with pytest.raises(ValueError, match="batch_size.*0"):
        evaluate_unlearning(ContextFree(), None, fake_data(), batch_size=0, batch_fn=word_batch)
    with pytest.raises(TypeError, match="list"):
        evaluate_unlearning(ContextFree(), None, [], batch_fn=word_batch)  # type: ignore[arg-type]


def test_batched_losses_match_float64_reference() -> None:
    """Length-sorted batching must give each pair its own loss, whatever the batch size."""
    torch.manual_seed(0)
    table = nn.Embedding(8, 8).double()  # logits of the next token from the current token

    class Bigram(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = table

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
            return self.table(input_ids)

    rng = np.random.default_rng(1)
    letters = "TPX"
    questions = [" ".join(["q"] * int(rng.integers(1, 5))) for _ in range(11)]
    answers = [" ".join(rng.choice(list(letters), int(rng.integers(1, 6)))) for _ in range(11)]
    logp = torch.log_softmax(table.weight.detach(), dim=-1).numpy()
    expected = []
    for q, a in zip(questions, answers):
        seq = [0] * len(q.split()) + [KIND_TOKEN[w] for w in a.split()]
        start = len(q.split())
        nll = [-logp[seq[t - 1], seq[t]] for t in range(start, len(seq))]
        expected.append(np.mean(nll))
    for bs in (1, 4, 32):
        got = mean_answer_losses(Bigram(), questions, answers, word_batch, batch_size=bs)
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_default_lm_helpers_match_hf_loss_per_item() -> None:
    """With the project's tokenizer/model helpers, the batched per-item loss equals the loss
    Hugging Face computes for the item alone (an independent implementation)."""
    pytest.importorskip("transformers", reason="needs moopt[llm] (transformers)")
    from moopt.tasks.common.lm import build_small_lm, collate, encode_qa, train_tokenizer
    from moopt.tasks.unlearning.embedded import make_embedded

    data = make_embedded(n_people=4, n_forget=1, facts_per_person=3, n_utility=3, seed=5)
    items = data.forget + data.retain + data.background
    tok = train_tokenizer([f"{it.question} {it.answer} {it.truth_ratio_base} "
                           + " ".join(it.perturbed_answers) for it in items], 200, kind="word")
    model = build_small_lm(tok, arch="gpt2", size="tiny", seed=0).double()
    out = evaluate_unlearning(model.train(), tok, data, batch_size=4, max_new_tokens=6)
    assert model.training  # restored after evaluating in eval mode (no dropout)
    model.eval()
    reference = []
    for it in data.retain_eval:
        batch = collate([encode_qa(tok, it.question, it.answer, max_length=256)], tok.pad_token_id)
        with torch.no_grad():
            reference.append(float(model(**batch).loss))
    # HF computes its loss in float32 (it upcasts logits to float), hence the tolerance.
    assert out.metrics["retain/loss"] == pytest.approx(np.mean(reference), rel=1e-6)
    assert out.metrics["retain/probability"] == pytest.approx(np.mean(np.exp(-np.array(
        reference))), rel=1e-6)
    assert len(out.answers["world_facts"]) == 3 and len(out.forget_truth_ratios) == 3
    assert 0 <= out.metrics["model_utility"] <= 1


def test_normalized_probabilities_match_direct_formula() -> None:
    rng = np.random.default_rng(3)
    true, pert = rng.uniform(0, 5, 20), rng.uniform(0, 5, (20, 4))
    direct = np.exp(-true) / (np.exp(-true) + np.exp(-pert).sum(axis=1))
    np.testing.assert_allclose(M.normalized_probabilities(true, pert), direct, rtol=1e-12)


@pytest.mark.parametrize("module", ["metrics", "evaluation", "tofu_logs", "tofu_score",
                                    "placement"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    mod = importlib.import_module(f"moopt.tasks.unlearning.{module}")
    result = doctest.testmod(mod)
    assert result.failed == 0 and result.attempted > 0
