"""build_small_lm and load_causal_lm (fixtures saved into tmp_path, never downloaded)."""

from __future__ import annotations

import pytest
import torch
from moopt.tasks.common.models import build_small_lm, context_length, load_causal_lm


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_build_tiny(tok, arch):
    m = build_small_lm(tok, arch=arch, size="tiny", seed=3)
    n = sum(p.numel() for p in m.parameters())
    assert 50_000 < n < 1_000_000
    assert m.config.vocab_size == len(tok)
    assert (m.config.pad_token_id, m.config.bos_token_id, m.config.eos_token_id) == (0, 1, 2)
    assert context_length(m) == 256
    ids = torch.tensor([[1, 5, 9, 11]])
    assert m(input_ids=ids).logits.shape == (1, 4, len(tok))


def test_seeded_and_global_rng_untouched(tok):
    torch.manual_seed(123)
    expect = torch.rand(3)
    torch.manual_seed(123)
    a = build_small_lm(tok, arch="llama", seed=7)
    after = torch.rand(3)
    assert torch.equal(after, expect)  # building did not consume the global RNG
    b = build_small_lm(tok, arch="llama", seed=7)
    c = build_small_lm(tok, arch="llama", seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_build_options_and_errors(tok):
    m = build_small_lm(tok, arch="gpt2", context=32, dtype=torch.float64)
    assert context_length(m) == 32 and next(m.parameters()).dtype == torch.float64
    with pytest.raises(ValueError, match="arch must be one of .* got 'bert'"):
        build_small_lm(tok, arch="bert")
    with pytest.raises(ValueError, match="size must be one of .* got 'huge'"):
        build_small_lm(tok, size="huge")
    with pytest.raises(ValueError, match="context must be an int >= 2, got 1"):
        build_small_lm(tok, context=1)


def test_load_roundtrip(tok, gpt2, tmp_path, capfd):
    import transformers

    gpt2.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    transformers.utils.logging.enable_progress_bar()  # as in a fresh process
    capfd.readouterr()
    model, tok2 = load_causal_lm(tmp_path)
    # transformers' own "Loading weights" bar stays out of moopt's output
    assert "Loading weights" not in capfd.readouterr().err
    ids = torch.tensor([[1, 20, 30, 40]])
    gpt2.eval()
    model.eval()
    torch.testing.assert_close(model(input_ids=ids).logits, gpt2(input_ids=ids).logits)
    assert tok2("Mira")["input_ids"] == tok("Mira")["input_ids"]
    m16, _ = load_causal_lm(tmp_path, dtype=torch.bfloat16)
    assert next(m16.parameters()).dtype == torch.bfloat16


def test_load_errors(tok, gpt2, tmp_path):
    import transformers

    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        load_causal_lm(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_causal_lm(tmp_path)

    cfg = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    for cls in (transformers.BertForSequenceClassification, transformers.BertModel):
        path = tmp_path / cls.__name__
        cls(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        with pytest.raises(
            ValueError,
            match=f"{cls.__name__}.*not a causal language model|"
            f"not a causal language model.*{cls.__name__}",
        ) as err:
            load_causal_lm(path)
        assert str(path) in str(err.value)

    no_tok = tmp_path / "no_tokenizer"
    gpt2.save_pretrained(no_tok)
    with pytest.raises(FileNotFoundError, match="no_tokenizer.*has a model but no tokenizer"):
        load_causal_lm(no_tok)

    small = tmp_path / "small_vocab"
    from moopt.tasks.common.tokenizer import train_tokenizer

    little = train_tokenizer(["a b c"], vocab_size=265)
    assert len(little) < len(tok)
    build_small_lm(little, context=16).save_pretrained(small)
    tok.save_pretrained(small)
    with pytest.raises(ValueError, match="tokenizer has .* tokens but the model's vocabulary"):
        load_causal_lm(small)
