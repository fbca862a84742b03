"""The unlearning task on the real TOFU files (skipped when ../shared/data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from moopt.tasks.unlearning.adapter import UnlearningTask, load_data
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.presets import PRESETS

from moopt.runner.config import resolve_config
from moopt.runner.run import run_task

TOFU = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tofu"
pytestmark = pytest.mark.skipif(
    not (TOFU / "forget01.json").is_file(),
    reason=f"TOFU data not found at {TOFU} (a fresh clone has no ../shared/data)")


def test_smoke_caps_keep_forget_eval_paired_and_retain_eval_trained():
    cfg = resolve_config(UnlearningConfig, preset=PRESETS["smoke"], flags={"data_dir": TOFU})
    data = load_data(cfg)
    assert len(data.forget) == len(data.forget_eval) == 12
    assert {(i.question, i.answer) for i in data.forget} == {
        (i.question, i.answer) for i in data.forget_eval}
    assert len(data.retain) == 24 and len(data.retain_eval) == 12
    trained = {(i.question, i.answer) for i in data.retain}
    assert all((i.question, i.answer) in trained for i in data.retain_eval)
    assert not trained & {(i.question, i.answer) for i in data.forget}
    assert len(data.background) == 24  # real-authors + world-facts answers (from scratch)


def test_tofu_pipeline_runs_end_to_end_on_a_tiny_budget(tmp_path):
    cfg = resolve_config(UnlearningConfig, preset=PRESETS["smoke"], flags={
        "data_dir": TOFU, "out": tmp_path / "run", "cache_dir": tmp_path / "c",
        "progress": False, "finetune_epochs": 1.0, "steps": 3, "forget_subset": 6,
        "retain_subset": 6, "eval_subset": 4, "max_new_tokens": 4})
    result = run_task(UnlearningTask(), cfg, plots=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == pytest.approx({**result.metrics, **{
        k: v for k, v in metrics.items() if k.startswith("time_")}})
    for key in ("forget_quality", "model_utility", "forget/probability", "retain/rouge_l"):
        assert 0.0 <= metrics[key] <= 1.0, key


@pytest.mark.slow
def test_smoke_preset_on_tofu_unlearns(tmp_path):
    cfg = resolve_config(UnlearningConfig, preset=PRESETS["smoke"], flags={
        "data_dir": TOFU, "out": tmp_path / "run", "cache_dir": tmp_path / "c",
        "progress": False})
    result = run_task(UnlearningTask(), cfg)
    info = json.loads(next((tmp_path / "c" / "unlearning").glob("*/info.json")).read_text())
    before = info["target_metrics"]
    after = result.metrics
    # Selective: the forget set's answers lose probability, the retain set's do not, and
    # forget quality (closeness to the retain-only model) rises. The smoke preset (NPO beta
    # 1, 120 steps since the first-hour work) measured 0.987 -> 0.731 forget probability,
    # retain 0.987 -> 0.996, forget quality 0.008 -> 0.031, utility 0.796 -> 0.789.
    assert before["forget/probability"] > 0.8
    assert after["forget/probability"] < 0.8 * before["forget/probability"]
    assert after["retain/probability"] > 0.98 * before["retain/probability"]
    assert after["forget_quality"] > before["forget_quality"]
    assert after["model_utility"] > 0.9 * before["model_utility"]
