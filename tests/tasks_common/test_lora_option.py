"""The `--lora` option of the LM task adapters: validated up front, wraps only when asked."""

import pytest
from pydantic import ValidationError

pytest.importorskip("peft", reason="LoRA needs moopt[peft]")

from moopt.tasks.common.lora import finish_lora, wrap_if_lora  # noqa: E402
from moopt.tasks.safety.config import SafetyConfig  # noqa: E402
from moopt.tasks.unlearning.config import UnlearningConfig  # noqa: E402


@pytest.mark.parametrize("config_class", [UnlearningConfig, SafetyConfig])
def test_bad_lora_spec_names_the_bad_part(config_class):
    with pytest.raises(ValidationError, match="rank"):
        config_class(lora="rank=8")
    assert config_class(lora="r=4,alpha=8").lora == "r=4,alpha=8"
    assert config_class().lora is None


def test_wrap_if_lora_trains_only_adapters(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1,
                                     n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    same, params = wrap_if_lora(model, None)
    assert same is model and params is None
    wrapped, params = wrap_if_lora(model, "r=2,alpha=4,targets=c_attn")
    names = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert len(params) == len(names)
    note = finish_lora(wrapped, tmp_path)
    assert (tmp_path / "lora_adapters").is_dir() and (tmp_path / "merged_model").is_dir()
    assert "merged model" in note
    merged = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "merged_model")
    assert not any("lora_" in n for n, _ in merged.named_parameters())
