"""Generated text from a word-level tokenizer reads as text ("I'm sorry, but"), and the
metrics that read it do not change."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="the LM helpers need moopt[llm]")


def test_word_level_text_is_cleaned_up_and_bpe_is_left_alone():
    from moopt.tasks.common.generate import decode_text
    from moopt.tasks.common.tokenizer import train_tokenizer

    text = "I'm sorry, but I can't help. Is it ex's email? Don't!"
    word = train_tokenizer([text] * 3, vocab_size=300, kind="word")
    assert word.decode(word(text)["input_ids"]) != text  # joined with spaces: "I ' m ..."
    assert decode_text(word, word(text)["input_ids"]) == text
    bpe = train_tokenizer([text + " a . b"] * 3, vocab_size=300, kind="bpe")
    assert decode_text(bpe, bpe("a . b")["input_ids"]) == "a . b"  # BPE text is exact


def test_metrics_read_both_spellings_alike():
    from moopt.tasks.safety.metrics import rouge_l_recall
    from moopt.tasks.safety.refusal import StringMatchScorer

    spaced, clean = "I ' m sorry , but I can ' t help .", "I'm sorry, but I can't help."
    ref = "I'm sorry, I can't."
    assert rouge_l_recall(spaced, ref) == rouge_l_recall(clean, ref)
    scorer = StringMatchScorer()
    assert scorer.score_one("x", spaced) == scorer.score_one("x", clean) == "full_refusal"
