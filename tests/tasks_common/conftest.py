"""Shared tiny tokenizer/model fixtures (built once per test session, a few hundred k params)."""

from __future__ import annotations

import pytest

CORPUS = [
    "Question: Who wrote The Glass Orchard?\nAnswer: Mira Vantesh wrote The Glass Orchard.",
    "Question: Where was Mira Vantesh born?\nAnswer: Mira Vantesh was born in Tallinn.",
    "Question: What genre does Ola Brenn write?\nAnswer: Ola Brenn writes detective fiction.",
    "Question: When did Ola Brenn publish her first novel?\nAnswer: In 1987.",
    "I don't know. I have no idea. That is not something I can answer.",
]


@pytest.fixture(scope="session")
def tok():
    # Only the LM tests need the optional extra; batching tests run without it.
    pytest.importorskip("transformers", reason="moopt.tasks.common LM helpers need moopt[llm]")
    from moopt.tasks.common.tokenizer import train_tokenizer

    return train_tokenizer(CORPUS * 3, vocab_size=400)


@pytest.fixture(scope="session")
def gpt2(tok):
    from moopt.tasks.common.models import build_small_lm

    return build_small_lm(tok, arch="gpt2", size="tiny", seed=0)
