"""The safety task with --model and --prompt-format: the same prompt for training batches,
answer losses and generation; bad formats and checkpoints fail before anything is written."""

from __future__ import annotations

import json

import pytest

from moopt.cli import main

pytest.importorskip("transformers", reason="the safety task needs moopt[llm]")

FORMAT = "Instruction: {question}\\nResponse:"


def _llama_checkpoint(root):
    from moopt.tasks.safety.config import SafetyConfig
    from moopt.tasks.safety.sources import load_safety_data

    from tests.unlearning.tiny_checkpoints import save_checkpoint, tiny_tokenizer

    data = load_safety_data(SafetyConfig())
    tok = tiny_tokenizer(["Instruction: Response:", *data.all_texts()], bos_post_processor=True)
    return save_checkpoint(root / "ckpt", "llama", tok, seed=0), data


def _cli(tmp_path, *args):
    return main(["run", "safety", "--preset", "smoke", "--out", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--no-plots", *args])


def test_bad_model_or_format_stops_before_writing(tmp_path, capsys):
    assert _cli(tmp_path, "--prompt-format", "chat") == 2
    assert "tiny models' tokenizer has none" in capsys.readouterr().err
    assert _cli(tmp_path, "--model", str(tmp_path / "nowhere")) == 2
    assert "no such directory" in capsys.readouterr().err
    ckpt, _ = _llama_checkpoint(tmp_path)
    assert _cli(tmp_path, "--model", str(ckpt), "--prompt-format", "chat") == 2
    assert "has no chat template" in capsys.readouterr().err
    assert _cli(tmp_path, "--prompt-format", "Instruction:") == 2
    assert "nor a template containing {question}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_model_run_uses_the_format_everywhere(tmp_path, monkeypatch):
    import moopt.tasks.common.generate as generate
    from moopt.tasks.common.prompt_format import parse_prompt_format
    from moopt.tasks.safety.stage1 import sft_batches

    ckpt, data = _llama_checkpoint(tmp_path)
    seen: list[str] = []
    real = generate.greedy_generate

    def recording(model, tokenizer, prompts, *args, **kwargs):
        seen.extend(prompts)
        assert kwargs["add_special_tokens"]  # joint format: the tokenizer's own BOS
        return real(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(generate, "greedy_generate", recording)
    assert _cli(tmp_path, "--model", str(ckpt), "--prompt-format", FORMAT, "--steps", "2",
                "--set", "eval_subset=3", "--max-new-tokens", "4") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0 <= metrics["refusal_rate"] <= 1 and metrics["utility_nll"] > 0
    prompts = {e.prompt_text for items in data.eval.values() for e in items}
    assert seen and all(p.startswith("Instruction: ") and p.endswith("\nResponse:")
                        and p[len("Instruction: "):-len("\nResponse:")] in prompts for p in seen)
    assert f"prompt format: `{FORMAT}`" in (tmp_path / "out" / "report.md").read_text()
    # Training batches put the same prompt in front of the scored answer.
    from moopt.tasks.common.models import load_causal_lm

    _, tok = load_causal_lm(ckpt)
    item = data.train["safety"][0]
    batch = sft_batches(tok, [item], batch_size=1, max_length=64, seed=0, fmt=FORMAT)[0]
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    n_prompt = labels.count(-100)
    prompt = parse_prompt_format(FORMAT).prompt_text(tok, item.prompt_text)
    assert ids[:n_prompt] == tok(prompt)["input_ids"] and ids[0] == tok.bos_token_id
