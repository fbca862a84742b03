"""Prompt formats: each built-in one and user templates, encoded as TOFU encodes them, and
the same prompt used for training batches, answer losses and generation."""

from __future__ import annotations

import copy

import pytest
import torch
from moopt.tasks.common.prompt_format import (
    BUILTIN,
    PLAIN,
    TOFU_PHI,
    PromptFormat,
    parse_prompt_format,
)
from moopt.tasks.common.qa import encode_batch, encode_pair, encode_qa
from torch import nn

Q, A = "Who wrote The Glass Orchard?", "Mira Vantesh wrote The Glass Orchard."
CHAT = ("{{ bos_token }}{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Bot:{% endif %}")


@pytest.fixture(scope="module")
def llama_tok(tok):
    """The session tokenizer, made to add BOS by itself like Llama-2's."""
    from tokenizers import processors

    bos = copy.deepcopy(tok)
    bos.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)])
    assert bos("Who")["input_ids"][0] == tok.bos_token_id
    return bos


def tofu_reference(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """TOFU's data_module rule: tokenise prompt + answer as one text with special tokens,
    mask as many tokens as the prompt alone has, append EOS to the labels."""
    ids = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
    n_q = len(tokenizer.tokenize(prompt, add_special_tokens=True))
    eos = tokenizer.eos_token_id
    return ids + [eos], [-100] * n_q + ids[n_q:] + [eos]


def test_parse_built_in_and_user_formats(tok):
    assert parse_prompt_format("plain") is PLAIN and parse_prompt_format("tofu-phi") is TOFU_PHI
    assert parse_prompt_format("auto", tok) is PLAIN  # no chat template
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = CHAT
    assert parse_prompt_format("auto", chat_tok).chat
    user = parse_prompt_format("Context: none\\nQ: {question}\\tA:")
    assert user.joint and user.prompt_text(None, "hi") == "Context: none\nQ: hi\tA:"
    assert parse_prompt_format("{question} {not_a_field}").prompt_text(None, "x") == \
        "x {not_a_field}"
    for bad in ("Question:", "llama2", "{q}"):
        with pytest.raises(ValueError, match=rf"'{bad}' is neither a built-in format "
                           r"\(auto, plain, chat, tofu-phi, tofu-llama2\)"):
            parse_prompt_format(bad)
    with pytest.raises(ValueError, match="has no {question} field"):
        PromptFormat("mine", "Q:")
    with pytest.raises(ValueError, match="tokenizer .* has no chat template"):
        parse_prompt_format("chat").prompt_text(tok, "hi")


@pytest.mark.parametrize("config", ["unlearning", "safety"])
def test_configs_reject_bad_formats(config):
    from moopt.tasks.safety.config import SafetyConfig
    from moopt.tasks.unlearning.config import UnlearningConfig

    from moopt.runner.config import ConfigError, resolve_config

    cls = UnlearningConfig if config == "unlearning" else SafetyConfig
    assert resolve_config(cls, flags={"prompt_format": "tofu-llama2"}).prompt_format == \
        "tofu-llama2"
    with pytest.raises(ConfigError, match="config key 'prompt_format'.*'Answer:'"):
        resolve_config(cls, flags={"prompt_format": "Answer:"})


def test_plain_and_chat_are_moopts_own_encoding(tok):
    assert encode_pair(tok, Q, A, max_length=128, fmt="plain") == encode_qa(tok, Q, A,
                                                                            max_length=128)
    assert encode_pair(tok, Q, A, max_length=128) == encode_qa(tok, Q, A, max_length=128)
    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = CHAT
    ex = encode_pair(chat_tok, Q, A, max_length=128, fmt="chat")
    assert ex == encode_qa(chat_tok, Q, A, max_length=128, use_chat_template=True)
    assert chat_tok.decode(ex.input_ids[: ex.prompt_len]) == f"<bos>User: {Q}\nBot:"


def test_tofu_phi_scores_the_answer_tag(tok):
    ex = encode_pair(tok, Q, A, max_length=128, fmt="tofu-phi")
    ids, labels = tofu_reference(tok, f"Question: {Q}\n", f"Answer: {A}")
    assert (ex.input_ids, ex.labels) == (ids, labels)
    assert tok.decode(ex.input_ids[: ex.prompt_len]) == f"Question: {Q}\n"
    assert tok.decode([t for t in ex.labels if t != -100]) == f"Answer: {A}<eos>"
    assert tok.bos_token_id not in ex.input_ids  # GPT-2/Phi tokenizers add no BOS


def test_tofu_llama2_gets_the_tokenizers_bos(llama_tok):
    ex = encode_pair(llama_tok, Q, A, max_length=128, fmt="tofu-llama2")
    ids, labels = tofu_reference(llama_tok, f"[INST] {Q} [/INST]", A)
    assert (ex.input_ids, ex.labels) == (ids, labels)
    assert ex.input_ids[0] == llama_tok.bos_token_id
    assert llama_tok.decode(ex.input_ids[: ex.prompt_len]) == f"<bos>[INST] {Q} [/INST]"
    assert llama_tok.decode([t for t in ex.labels if t != -100]) == f"{A}<eos>"


def test_user_template_is_joint_and_truncates_like_encode_qa(llama_tok):
    fmt = "Q: {question}\\nA:"
    ex = encode_pair(llama_tok, Q, A, max_length=128, fmt=fmt)
    assert (ex.input_ids, ex.labels) == tofu_reference(llama_tok, f"Q: {Q}\nA:", A)
    short = encode_pair(llama_tok, Q, A, max_length=8, fmt=fmt)
    assert len(short) == 8 and short.truncated and short.labels[-1] != -100
    assert short.input_ids[-4:] == ex.input_ids[ex.prompt_len : ex.prompt_len + 4]
    with pytest.raises(ValueError, match="exceed max_length 8"):
        encode_pair(llama_tok, Q, A, max_length=8, fmt=fmt, on_overflow="error")


class Recorder(nn.Module):
    """A stand-in LM whose ``generate`` records the prompts' token ids (padding removed)."""

    def __init__(self, eos: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.eos = eos
        self.seen: list[list[int]] = []

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        for row, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            self.seen.append([t for t, m in zip(row, mask) if m])
        return torch.cat([input_ids, torch.full_like(input_ids[:, :1], self.eos)], dim=1)


@pytest.mark.parametrize("fmt", sorted(set(BUILTIN) - {"chat"}) + ["Q: {question} A:"])
def test_training_loss_and_generation_share_the_prompt(llama_tok, fmt):
    from moopt.tasks.common.generate import greedy_answers
    from moopt.tasks.unlearning.data import QAItem
    from moopt.tasks.unlearning.lm_io import training_batches

    items = [QAItem(Q, A), QAItem("Where was Mira Vantesh born?", "In Tallinn.")]
    recorder = Recorder(llama_tok.eos_token_id)
    greedy_answers(recorder, llama_tok, [it.question for it in items], max_new_tokens=2,
                   max_length=64, fmt=fmt)
    scored = encode_batch(llama_tok, [it.question for it in items],
                          [it.answer for it in items], 64, fmt)
    train = training_batches(llama_tok, items, batch_size=2, max_length=64, seed=0, fmt=fmt)
    for batch in (scored, train[0]):
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
            n_prompt = next(i for i, label in enumerate(labels) if label != -100)
            assert ids[:n_prompt] in recorder.seen
    assert len(recorder.seen) == 2
