"""--model PATH: the target is a local HF checkpoint used as is; the retain-only model is
fine-tuned from it on the retain data."""

from __future__ import annotations

import torch
from moopt.tasks.common.models import build_small_lm, load_causal_lm
from moopt.tasks.unlearning.adapter import UnlearningTask, load_data
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.lm_io import make_tokenizer
from moopt.tasks.unlearning.presets import PRESETS

from moopt.runner.config import resolve_config
from moopt.runner.run import run_task


def test_local_checkpoint_is_the_target(tmp_path):
    preset = {**PRESETS["smoke"], "n_people": 4, "facts_per_person": 2, "n_utility": 4,
              "finetune_epochs": 2.0, "steps": 4, "max_new_tokens": 4}
    cfg = resolve_config(UnlearningConfig, preset=preset)
    data = load_data(cfg)
    tok = make_tokenizer(data, kind="word", vocab_size=512)
    ckpt = tmp_path / "ckpt"
    model = build_small_lm(tok, "gpt2", "tiny", seed=3, context=64)
    model.save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    cfg = resolve_config(UnlearningConfig, preset=preset, flags={
        "model": ckpt, "out": tmp_path / "run", "cache_dir": tmp_path / "cache",
        "progress": False})
    result = run_task(UnlearningTask(), cfg, plots=False)
    info_dirs = list((tmp_path / "cache" / "unlearning").glob("*/info.json"))
    assert len(info_dirs) == 1
    entry = info_dirs[0].parent
    assert not (entry / "target").exists()  # the checkpoint itself is the target
    # The frozen reference equals the checkpoint's weights; the retain model moved away.
    ref = result.setup.extras["ref_model"]
    for a, b in zip(ref.parameters(), model.parameters()):
        assert torch.equal(a, b)
    retain, _ = load_causal_lm(entry / "retain")
    assert not all(torch.equal(a, b) for a, b in zip(retain.parameters(), model.parameters()))
    assert result.metrics["forget/probability"] > 0
    assert "time_finetune_retain_s" in (tmp_path / "run" / "metrics.json").read_text()
    assert "time_finetune_target_s" not in (tmp_path / "run" / "metrics.json").read_text()
