"""--model / --retain-model / --retain-logs: TOFU's protocol on real (here: tiny, local) HF
checkpoints. Stage 1 trains nothing, the checkpoints stay untouched, and forget quality is
the KS test against the retain model's forget-set truth ratios, read from the model or from
its TOFU logs alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from moopt.tasks.unlearning import stage1
from moopt.tasks.unlearning.adapter import UnlearningTask, load_data
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.lm_io import corpus
from moopt.tasks.unlearning.presets import PRESETS
from moopt.tasks.unlearning.tofu_logs import LOG_FILES
from moopt.tasks.unlearning.tofu_score import retain_truth_ratios
from scipy.stats import ks_2samp

from moopt.cli import main
from moopt.runner.config import resolve_config
from moopt.runner.run import run_task

from .tiny_checkpoints import save_checkpoint, tiny_tokenizer, tree_hash

pytest.importorskip("transformers", reason="HF checkpoints need moopt[llm]")

SMALL = {**PRESETS["smoke"], "n_people": 4, "facts_per_person": 2, "n_utility": 4,
         "steps": 2, "max_new_tokens": 4, "max_length": 64, "eval_batch_size": 16}
FORMATS = {"llama": "tofu-llama2", "gpt2": "tofu-phi"}


def _checkpoints(root, arch):
    data = load_data(resolve_config(UnlearningConfig, preset=SMALL))
    tok = tiny_tokenizer(corpus(data), bos_post_processor=arch == "llama")
    return (save_checkpoint(root / "target", arch, tok, seed=3),
            save_checkpoint(root / "retain", arch, tok, seed=4), data)


def _tofu_item_losses(path, items, fmt_prompt, fmt_answer_prefix, answer_of):
    """Mean answer-token NLL per item the way TOFU's data_module computes it, with HF's own
    loss: prompt + answer tokenised as one text, the prompt's tokens masked, EOS appended."""
    from moopt.tasks.common.models import load_causal_lm

    model, tok = load_causal_lm(path)
    model.eval()
    out = []
    for it in items:
        for answer in answer_of(it):
            prompt = fmt_prompt.replace("{question}", it.question)
            ids = tok(prompt + fmt_answer_prefix + answer, add_special_tokens=True)["input_ids"]
            n_q = len(tok.tokenize(prompt, add_special_tokens=True))
            labels = [-100] * n_q + ids[n_q:] + [tok.eos_token_id]
            ids = ids + [tok.eos_token_id]
            with torch.no_grad():
                loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
            out.append(float(loss))
    return out


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_checkpoints_train_nothing_and_give_forget_quality(tmp_path, monkeypatch, arch):
    target, retain, data = _checkpoints(tmp_path, arch)
    hashes = {p: tree_hash(p) for p in (target, retain)}

    def no_training(*args, **kwargs):
        raise AssertionError("stage 1 fine-tuned a model")

    monkeypatch.setattr(stage1, "finetune", no_training)
    fmt = FORMATS[arch]
    flags = {"model": target, "retain_model": retain, "prompt_format": fmt,
             "out": tmp_path / "run", "cache_dir": tmp_path / "cache", "progress": False}
    result = run_task(UnlearningTask(), resolve_config(UnlearningConfig, preset=SMALL,
                                                       flags=flags), plots=False)
    assert {p: tree_hash(p) for p in (target, retain)} == hashes
    entry = next((tmp_path / "cache" / "unlearning").glob("*/info.json")).parent
    assert sorted(p.name for p in entry.iterdir()) == ["info.json", "tofu_logs"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert not [k for k in metrics if "finetune" in k]
    # The frozen reference model of NPO is the checkpoint itself.
    from moopt.tasks.common.models import load_causal_lm

    ckpt, _ = load_causal_lm(target)
    for a, b in zip(result.setup.extras["ref_model"].parameters(), ckpt.parameters()):
        assert torch.equal(a, b)

    # Forget quality is the KS p-value against the retain checkpoint's truth ratios, which
    # an independent computation (TOFU's encoding, HF's loss) reproduces.
    logged = retain_truth_ratios(tmp_path / "run" / "tofu_logs" / "retain_model")
    prompt = {"tofu-llama2": "[INST] {question} [/INST]", "tofu-phi": "Question: {question}\n"}
    prefix = {"tofu-llama2": "", "tofu-phi": "Answer: "}
    para = _tofu_item_losses(retain, data.forget_eval, prompt[fmt], prefix[fmt],
                             lambda it: [it.paraphrased_answer])
    pert = np.reshape(_tofu_item_losses(retain, data.forget_eval, prompt[fmt], prefix[fmt],
                                        lambda it: it.perturbed_answers), (len(para), -1))
    np.testing.assert_allclose(logged, np.exp(pert.mean(axis=1) - para), rtol=1e-4)
    model_ratios = retain_truth_ratios(tmp_path / "run" / "tofu_logs")
    assert metrics["forget_quality"] == ks_2samp(model_ratios, logged).pvalue

    # The same run with the retain model's logs instead of the model: same figures.
    flags.update(retain_model=None, retain_logs=tmp_path / "run" / "tofu_logs" / "retain_model",
                 out=tmp_path / "run2")
    run_task(UnlearningTask(), resolve_config(UnlearningConfig, preset=SMALL, flags=flags),
             plots=False)
    again = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    for key in ("forget_quality", "model_utility", "forget/truth_ratio"):
        assert again[key] == metrics[key], key
    assert not (tmp_path / "run2" / "tofu_logs" / "retain_model").exists()
    assert (tmp_path / "run2" / "tofu_logs" / "target" / LOG_FILES["forget"]).is_file()


def _cli(tmp_path, *args):
    preset = [] if "--preset" in args else ["--preset", "smoke"]
    return main(["run", "unlearning", *preset, "--out", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--no-plots", *args])


def test_model_without_reference_stops_before_writing(tmp_path, capsys):
    target, retain, _ = _checkpoints(tmp_path, "gpt2")
    assert _cli(tmp_path, "--model", str(target)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--retain-model PATH" in err and "--retain-logs DIR" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    assert _cli(tmp_path, "--model", str(target), "--retain-model", str(retain),
                "--retain-logs", str(tmp_path)) == 2
    assert "not both" in capsys.readouterr().err
    assert _cli(tmp_path, "--retain-model", str(retain)) == 2
    assert "--retain-model needs --model" in capsys.readouterr().err
    assert _cli(tmp_path, "--model", str(target), "--retain-model", str(tmp_path / "no")) == 2
    assert "--retain-model" in capsys.readouterr().err
    assert _cli(tmp_path, "--model", str(target), "--retain-logs", str(tmp_path)) == 2
    assert "eval_log_forget.json: file missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_retain_logs_over_another_forget_set(tmp_path, capsys):
    target, _, data = _checkpoints(tmp_path, "gpt2")
    logs = tmp_path / "logs"
    logs.mkdir()
    n = len(data.forget_eval) + 1
    (logs / "eval_log_forget.json").write_text(json.dumps({
        "avg_paraphrased_loss": {str(i): 1.0 for i in range(n)},
        "average_perturb_loss": {str(i): [2.0, 3.0] for i in range(n)}}))
    assert _cli(tmp_path, "--model", str(target), "--retain-logs", str(logs), "--set",
                "n_people=4", "--set", "facts_per_person=2") == 2
    err = capsys.readouterr().err
    assert f"holds {n} forget items but this run evaluates {n - 1}" in err
    assert "eval_log_forget.json" in err


def test_chat_format_needs_a_chat_template(tmp_path, capsys):
    target, retain, data = _checkpoints(tmp_path, "gpt2")
    assert _cli(tmp_path, "--model", str(target), "--retain-model", str(retain),
                "--prompt-format", "chat") == 2
    assert "has no chat template" in capsys.readouterr().err
    assert _cli(tmp_path, "--prompt-format", "chat") == 2
    assert "tiny models' tokenizer has none" in capsys.readouterr().err
    assert _cli(tmp_path, "--prompt-format", "Question:") == 2
    assert "nor a template containing {question}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    chat = tiny_tokenizer(corpus(data), chat_template="{% for m in messages %}User: "
                          "{{ m['content'] }}{% endfor %}{% if add_generation_prompt %} Bot:"
                          "{% endif %}")
    with_template = save_checkpoint(tmp_path / "chat", "gpt2", chat, seed=0)
    cfg = resolve_config(UnlearningConfig, preset=SMALL, flags={
        "model": with_template, "retain_model": with_template, "prompt_format": "chat"})
    UnlearningTask().validate(cfg)  # accepted: the checkpoint declares a template


def test_paper_preset_is_uncapped_and_runs_on_checkpoints(tmp_path):
    # The preset requires --data-dir and --model (given a value here).
    needs = {k: "x" for k in PRESETS["paper"]["requires"]}
    cfg = resolve_config(UnlearningConfig, preset=PRESETS["paper"], flags=needs)
    assert (cfg.forget_subset, cfg.retain_subset, cfg.eval_subset, cfg.eval_first) == (None,) * 4
    assert (cfg.lr, cfg.epochs, cfg.steps, cfg.batch_size, cfg.weight_decay, cfg.schedule) == (
        1e-5, 5.0, None, 4, 0.01, {"forget": 1, "retain": 5})
    target, retain, data = _checkpoints(tmp_path, "gpt2")
    # The tiny embedded data (4 forget items: 1 batch, 6 steps an epoch), cut to 3 steps.
    assert _cli(tmp_path, "--preset", "paper", "--model", str(target), "--retain-model",
                str(retain), "--prompt-format", "tofu-phi", "--epochs", "0.34",
                "--max-new-tokens", "4", "--set", "n_people=4", "--set",
                "facts_per_person=2", "--set", "n_utility=4") == 0
    history = (tmp_path / "out" / "history.jsonl").read_text().splitlines()
    assert max(json.loads(line)["step"] for line in history) == 3
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert 0 <= metrics["forget_quality"] <= 1 and 0 <= metrics["model_utility"] <= 1
