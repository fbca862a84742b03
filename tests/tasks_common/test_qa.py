"""Prompt/answer encoding, truncation, chat templates, and the HF label convention."""

from __future__ import annotations

import pytest
import torch
from moopt.tasks.common.batching import collate
from moopt.tasks.common.qa import (
    PLAIN_TEMPLATE,
    PromptTemplate,
    encode_qa,
    encode_qa_pairs,
    format_prompt,
)

from moopt.objectives.lm_utils import answer_cross_entropy, sequence_nll

Q, A = "Who wrote The Glass Orchard?", "Mira Vantesh wrote The Glass Orchard."


def test_plain_encoding(tok):
    ex = encode_qa(tok, Q, A, max_length=256)
    assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids[-1] == tok.eos_token_id
    assert ex.labels[: ex.prompt_len] == [-100] * ex.prompt_len
    assert ex.labels[ex.prompt_len :] == ex.input_ids[ex.prompt_len :]
    assert not ex.truncated and len(ex) == len(ex.labels)
    assert tok.decode(ex.input_ids[1 : ex.prompt_len]) == f"Question: {Q}\nAnswer:"
    assert tok.decode(ex.input_ids[ex.prompt_len :]) == f" {A}<eos>"
    assert format_prompt(tok, Q) == PLAIN_TEMPLATE.prompt.format(question=Q)


def test_custom_template(tok):
    t = PromptTemplate(prompt="Q: {question} A:", answer_prefix=" ")
    ex = encode_qa(tok, "hi", "yo", max_length=64, template=t)
    assert tok.decode(ex.input_ids, skip_special_tokens=True) == "Q: hi A: yo"
    with pytest.raises(ValueError, match="has no '\\{question\\}' field"):
        PromptTemplate(prompt="Question:")


def test_chat_template(tok):
    import copy

    chat = copy.deepcopy(tok)
    chat.chat_template = (
        "{{ bos_token }}{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Bot:{% endif %}"
    )
    assert format_prompt(chat, "hi") == "<bos>User: hi\nBot:"
    ex = encode_qa(chat, "hi", "yo", max_length=64)  # auto: uses the chat template
    assert ex.input_ids.count(chat.bos_token_id) == 1  # the template owns BOS
    assert chat.decode(ex.input_ids[: ex.prompt_len]) == "<bos>User: hi\nBot:"
    assert chat.decode(ex.input_ids[ex.prompt_len :]) == "yo<eos>"
    plain = encode_qa(chat, "hi", "yo", max_length=64, use_chat_template=False)
    assert chat.decode(plain.input_ids[1 : plain.prompt_len]) == "Question: hi\nAnswer:"
    with pytest.raises(ValueError, match="use_chat_template=True but tokenizer .* no chat"):
        encode_qa(tok, "hi", "yo", max_length=64, use_chat_template=True)


def test_truncation_answer_then_prompt(tok):
    full = encode_qa(tok, Q, A, max_length=256)
    n_prompt, n_answer = full.prompt_len, len(full) - full.prompt_len
    # 1. a long answer and a prompt shorter than half the budget: the prompt stays whole,
    #    the answer loses its end (EOS first)
    long_a = " ".join([A] * 6)
    whole = encode_qa(tok, Q, long_a, max_length=10_000)
    L = 2 * n_prompt + 4
    assert len(whole) > L
    ex = encode_qa(tok, Q, long_a, max_length=L)
    assert ex.truncated and len(ex) == L and ex.prompt_len == n_prompt
    assert ex.input_ids == whole.input_ids[:L] and tok.eos_token_id not in ex.input_ids
    # 2. a long prompt: it is cut from the left, the answer keeps min(len, L // 2) tokens
    long_q = "Tell me everything. " * 30 + Q
    big = encode_qa(tok, long_q, A, max_length=10_000)
    L = 24
    ex = encode_qa(tok, long_q, A, max_length=L)
    keep_answer = min(n_answer, L // 2)
    assert len(ex) == L and len(ex) - ex.prompt_len == keep_answer
    assert (
        ex.input_ids[: ex.prompt_len]
        == big.input_ids[big.prompt_len - ex.prompt_len : big.prompt_len]
    )
    assert ex.input_ids[ex.prompt_len :] == big.input_ids[big.prompt_len :][:keep_answer]
    assert ex.input_ids[0] != tok.bos_token_id  # BOS went with the prompt's beginning
    # 3. on_overflow="error" refuses instead
    with pytest.raises(ValueError, match="exceed max_length 24"):
        encode_qa(tok, long_q, A, max_length=24, on_overflow="error")


def test_encode_errors(tok):
    with pytest.raises(ValueError, match="max_length must be an int >= 2, got 1"):
        encode_qa(tok, Q, A, max_length=1)
    with pytest.raises(ValueError, match="on_overflow must be one of .* got 'drop'"):
        encode_qa(tok, Q, A, max_length=64, on_overflow="drop")
    with pytest.raises(TypeError, match=r"pairs\[1\]: answer must be a string, got NoneType"):
        encode_qa_pairs(tok, [(Q, A), (Q, None)], max_length=64)
    with pytest.raises(ValueError, match=r"pairs\[0\] must be a \(question, answer\) pair"):
        encode_qa_pairs(tok, ["just a string"], max_length=64)


def test_batch_matches_hf_loss_and_is_padding_invariant(tok, gpt2):
    pairs = [(Q, A), ("Where?", "Tallinn."), ("When did Ola Brenn publish?", "In 1987.")]
    examples = encode_qa_pairs(tok, pairs, max_length=256)
    batch = collate(examples, tok.pad_token_id)
    gpt2.eval()
    with torch.no_grad():
        hf_loss = gpt2(**batch).loss  # transformers shifts and ignores -100 itself
        ours = answer_cross_entropy(gpt2, batch)
        nll, n = sequence_nll(gpt2, batch)
        for i, ex in enumerate(examples):  # each row alone, without any padding
            solo = collate([ex], tok.pad_token_id)
            nll_i, n_i = sequence_nll(gpt2, solo)
            torch.testing.assert_close(nll[i], nll_i[0], rtol=1e-5, atol=1e-5)
            assert n[i] == n_i[0] == len(ex) - ex.prompt_len
    torch.testing.assert_close(ours, hf_loss, rtol=1e-5, atol=1e-6)
