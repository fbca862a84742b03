"""greedy_generate: left-padded batches equal one-by-one greedy decoding; a trained model
reproduces its answers."""

from __future__ import annotations

import pytest
import torch
from moopt.tasks.common.batching import collate
from moopt.tasks.common.generate import greedy_generate
from moopt.tasks.common.models import build_small_lm
from moopt.tasks.common.qa import encode_qa_pairs, format_prompt

from moopt.objectives import get_objective

from .conftest import CORPUS


def manual_greedy(model, tok, prompt: str, n: int) -> str:
    """Unbatched, unpadded argmax loop over full forward passes (no cache, no generate)."""
    ids = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
    new = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt == tok.eos_token_id:
                break
            ids.append(nxt)
            new.append(nxt)
    return tok.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_batched_left_padding_matches_unbatched(tok, arch):
    model = build_small_lm(tok, arch=arch, seed=1, dtype=torch.float64)
    prompts = [
        format_prompt(tok, "Who?"),
        format_prompt(tok, "Where was Mira Vantesh born, and when did she move away?"),
        "Ola",
    ]
    model.train()
    out = greedy_generate(model, tok, prompts, max_new_tokens=6, batch_size=2)
    assert model.training  # mode restored
    model.eval()
    expect = [manual_greedy(model, tok, p, 6) for p in prompts]
    assert out == expect
    assert any(len(o) > 0 for o in out)


def test_trained_model_answers(tok):
    pairs = [line.split("\nAnswer: ") for line in CORPUS[:4]]
    pairs = [(q.removeprefix("Question: "), a) for q, a in pairs]
    model = build_small_lm(tok, arch="gpt2", seed=0)
    batch = collate(encode_qa_pairs(tok, pairs, max_length=64), tok.pad_token_id)
    sft = get_objective("sft")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = None
    for _ in range(80):
        loss = sft(model, batch)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    prompts = [format_prompt(tok, q) for q, _ in pairs]
    out = greedy_generate(model, tok, prompts, max_new_tokens=20, batch_size=4)
    assert out == [a for _, a in pairs]


def test_bos_handling_mirrors_encode_qa(tok, gpt2):
    import copy

    from moopt.tasks.common.qa import encode_qa

    chat = copy.deepcopy(tok)
    chat.chat_template = (
        "{{ bos_token }}{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Bot:{% endif %}"
    )
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def generate(self, input_ids, attention_mask, **kw):
            seen.append(input_ids[attention_mask.bool()].tolist())
            return self.inner.generate(input_ids=input_ids, attention_mask=attention_mask, **kw)

    spy = Spy(gpt2)
    for t in (tok, chat):
        ex = encode_qa(t, "hi", "yo", max_length=64)
        greedy_generate(spy, t, [format_prompt(t, "hi")], 2)
        assert seen[-1] == ex.input_ids[: ex.prompt_len]
    assert seen[-1].count(tok.bos_token_id) == 1
    greedy_generate(spy, tok, ["<bos>hi"], 2, add_bos=True)  # never a second BOS
    assert seen[-1].count(tok.bos_token_id) == 1
    # max_prompt_tokens keeps the last tokens of a long prompt, BOS included in the count
    long_prompt = format_prompt(tok, "the cat sat on the mat " * 6)
    greedy_generate(spy, tok, [long_prompt], 2)
    full = seen[-1]
    greedy_generate(spy, tok, [long_prompt, "hi"], 2, max_prompt_tokens=7)
    assert seen[-1][: 7] == full[-7:] and len(seen[-1]) == 7 + len(
        [tok.bos_token_id, *tok("hi", add_special_tokens=False)["input_ids"]])


def test_errors(tok, gpt2):
    with pytest.raises(TypeError, match="needs a HF model with .generate"):
        greedy_generate(torch.nn.Linear(2, 2), tok, ["a"], 3)
    with pytest.raises(TypeError, match="list of strings, got one string"):
        greedy_generate(gpt2, tok, "a", 3)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1, got 0"):
        greedy_generate(gpt2, tok, ["a"], 0)
    with pytest.raises(ValueError, match="max_prompt_tokens must be an int >= 1 or None, got 0"):
        greedy_generate(gpt2, tok, ["a"], 2, max_prompt_tokens=0)
    with pytest.raises(TypeError, match=r"prompts\[1\] is int"):
        greedy_generate(gpt2, tok, ["a", 5], 2)
    with pytest.raises(ValueError, match=r"prompts\[0\] is empty"):
        greedy_generate(gpt2, tok, [""], 2, add_bos=False)
