"""tasks/common/lora.py on tiny GPT-2 and Llama models built from configs (offline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="needs moopt[llm] (transformers)")
peft = pytest.importorskip("peft", reason="needs moopt[peft] (peft)")

from moopt.tasks.common.lora import (  # noqa: E402
    LoraSpec,
    apply_lora,
    merge,
    parse_lora_spec,
    save_adapters,
    trainable_parameters,
)

import moopt  # noqa: E402

IDS = torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))


def gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=32, n_positions=8, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
        bos_token_id=0, eos_token_id=0, pad_token_id=0))


def test_parse_accepts_every_key() -> None:
    spec = parse_lora_spec(" r=4, alpha=8.5 ,dropout=0.1,targets=q_proj+v_proj,bias=lora_only")
    assert spec == LoraSpec(r=4, alpha=8.5, dropout=0.1, targets=("q_proj", "v_proj"),
                            bias="lora_only")
    assert parse_lora_spec("r=16") == LoraSpec(r=16)
    assert parse_lora_spec(spec) is spec


@pytest.mark.parametrize(("text", "message"), [
    ("", "needs key=value pairs"),
    ("r", r"'r' is not key=value"),
    ("r=8,rank=4", r"unknown key 'rank'; keys are r, alpha, dropout, targets, bias"),
    ("r=8,r=4", "key 'r' is given twice"),
    ("r=eight", r"r must be an int >= 1, got 'eight'"),
    ("r=2.5", r"r must be an int >= 1, got '2.5'"),
    ("alpha=0", r"alpha must be a number > 0, got '0'"),
    ("dropout=1", r"dropout must be a number in \[0, 1\), got '1'"),
    ("targets=q_proj++v_proj", "targets must be module names joined by '\\+'"),
    ("bias=some", r"bias must be one of \('none', 'all', 'lora_only'\), got 'some'"),
])
def test_parse_errors_name_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_lora_spec(text)


@pytest.mark.parametrize("build", [gpt2, llama])
def test_optimizer_steps_only_the_adapters(build: object, tmp_path: Path) -> None:
    base = build()
    model = apply_lora(base, "r=4,alpha=8")
    params = trainable_parameters(model)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    # Adapter sizes: r * (in + out) per targeted layer (PEFT's default targets).
    expected = 0
    for module in model.modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            expected += a.numel() + b.numel()
            assert a.shape[0] == 4 and b.shape[1] == 4
    assert sum(p.numel() for p in params) == expected > 0
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = moopt.MultiObjectiveOptimizer(params, objectives=["forget", "retain"], lr=1e-2)
    out_before = model(input_ids=IDS).logits.detach()
    for name in ("forget", "retain", "retain"):
        loss = model(input_ids=IDS, labels=IDS).loss
        (-loss if name == "forget" else loss).backward()
        opt.step(objective=name)
        opt.zero_grad()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen[n]), n
    assert len(opt.state) == len(params)
    out_after = model(input_ids=IDS).logits.detach()
    assert not torch.allclose(out_before, out_after)

    # Saved adapters on a fresh base reproduce the trained model.
    path = save_adapters(model, tmp_path / "adapters")
    assert (path / "adapter_config.json").is_file()
    reloaded = peft.PeftModel.from_pretrained(build(), str(path))
    torch.testing.assert_close(reloaded(input_ids=IDS).logits, out_after)

    # Merging folds the adapters into plain weights with the same outputs.
    merged = merge(model)
    assert type(merged) is type(base)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(merged(input_ids=IDS).logits, out_after, rtol=1e-5, atol=1e-5)


def test_explicit_targets_and_errors() -> None:
    model = apply_lora(llama(), "r=2,targets=q_proj+k_proj+v_proj+o_proj")
    targeted = {n.split(".")[-4] for n, p in model.named_parameters()
                if p.requires_grad and "lora_A" in n}
    assert targeted == {"q_proj", "k_proj", "v_proj", "o_proj"}
    with pytest.raises(ValueError, match=r"LoRA targets \['nope'\] are not modules"):
        apply_lora(llama(), "targets=nope")
    with pytest.raises(TypeError, match="needs a LoRA-wrapped model, got GPT2LMHeadModel"):
        merge(gpt2())
    with pytest.raises(TypeError, match="needs a LoRA-wrapped model"):
        save_adapters(gpt2(), "unused")
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="Linear has no trainable parameters"):
        trainable_parameters(frozen)
