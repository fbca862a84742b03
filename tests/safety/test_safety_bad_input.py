"""Bad input to the task: clear errors, or documented truncation, never a crash."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from moopt.tasks.safety.config import SafetyConfig
from moopt.tasks.safety.data import SafetyDataError
from moopt.tasks.safety.sources import load_safety_data

pytest.importorskip("transformers", reason="the safety task needs moopt[llm]")


@pytest.fixture(scope="module")
def tiny():
    from moopt.tasks.common.models import build_small_lm
    from moopt.tasks.common.tokenizer import train_tokenizer

    data = load_safety_data(SafetyConfig())
    tok = train_tokenizer(["Question: Answer:", *data.all_texts()], vocab_size=2000, kind="word")
    return tok, build_small_lm(tok, "gpt2", "tiny", seed=0, context=64)


def test_tokenizer_without_pad_token(tiny):
    from moopt.tasks.safety.stage1 import check_tokenizer_and_context

    _, model = tiny
    no_pad = SimpleNamespace(pad_token_id=None)
    with pytest.raises(SafetyDataError, match="no pad token"):
        check_tokenizer_and_context(no_pad, model, SafetyConfig(max_length=64), "ckpt")


def test_max_length_over_context(tiny):
    from moopt.tasks.safety.stage1 import check_tokenizer_and_context

    tok, model = tiny
    with pytest.raises(SafetyDataError, match="max_length 128 exceeds the model's context of 64"):
        check_tokenizer_and_context(tok, model, SafetyConfig(max_length=128), "ckpt")
    with pytest.raises(SafetyDataError, match="max_new_tokens 64 must be smaller"):
        check_tokenizer_and_context(tok, model, SafetyConfig(max_length=64, max_new_tokens=64),
                                    "ckpt")


def test_prompts_longer_than_context_are_truncated(tiny):
    """A prompt far over the context is cut from the left in training and generation."""
    from moopt.tasks.safety.data import Example
    from moopt.tasks.safety.evaluation import answer_nll, generate
    from moopt.tasks.safety.stage1 import sft_batches

    tok, model = tiny
    long_prompt = "How do I kill a Python process? " * 80
    batches = sft_batches(tok, [Example(instruction=long_prompt, answer="Run kill .",
                                        kind="safe_scary")], batch_size=1, max_length=64, seed=0)
    assert batches[0]["input_ids"].shape[1] == 64
    assert (batches[0]["labels"] != -100).any()  # the answer survived truncation
    outs = generate(model, tok, [long_prompt, "hi"], max_new_tokens=4, max_length=64,
                    batch_size=2)
    assert len(outs) == 2
    nll = answer_nll(model, tok, [long_prompt], ["Run kill ."], max_length=64, batch_size=1)
    assert nll > 0


def test_no_harmful_items_in_data_dir(tmp_path):
    stl = tmp_path / "safety-tuned-llamas"
    (stl / "training").mkdir(parents=True)
    (stl / "evaluation").mkdir()
    (tmp_path / "xstest").mkdir()
    (tmp_path / "xstest" / "xstest_prompts.csv").write_text("prompt,label\nhi,safe\n")
    (stl / "training" / "safety_only_data_Instructions.json").write_text("[]")
    with pytest.raises(SafetyDataError, match="holds no items"):
        load_safety_data(SafetyConfig(data_dir=tmp_path))
    with pytest.raises(SafetyDataError, match="must hold safety-tuned-llamas"):
        load_safety_data(SafetyConfig(data_dir=tmp_path / "nothing"))


def test_unknown_scorer_fails_before_training(tmp_path):
    from moopt.tasks.safety.adapter import SafetyTask

    from moopt.runner.task import RunContext

    ctx = RunContext(run_dir=None, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown refusal scorer 'judge'"):
        SafetyTask().prepare(SafetyConfig(scorer="judge"), ctx)
    assert not (tmp_path / "safety").exists()
