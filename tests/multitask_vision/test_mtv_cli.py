"""End to end: the smoke preset through ``moopt run``, and the modes sweep."""

from __future__ import annotations

import json

import pytest

from moopt.cli import main
from tasks.multitask_vision.sweep import run_sweep


def test_smoke_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "multitask-vision", "--preset", "smoke", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("acc_left", "acc_right", "delta_m", "single_acc_left", "seconds_per_epoch"):
        assert key in metrics and isinstance(metrics[key], float)
    # Real learning in 60 steps: far above chance (10%) on both tasks.
    assert metrics["acc_left"] > 0.2 and metrics["acc_right"] > 0.2
    assert metrics["single_acc_left"] > 0.3
    expect = -sum((metrics[f"acc_{t}"] - metrics[f"single_acc_{t}"]) / metrics[f"single_acc_{t}"]
                  for t in ("left", "right")) / 2 * 100
    assert metrics["delta_m"] == pytest.approx(expect)
    report = (out / "report.md").read_text()
    assert "Single-task baselines" in report and "memory_report()" in report
    assert (out / "accuracy.png").is_file() and (out / "losses.png").is_file()
    losses = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    left = [r["loss"] for r in losses if r.get("objective") == "left"]
    assert sum(left[-5:]) < sum(left[:5])  # the training loss fell


def test_bad_task_name_on_the_command_line_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "multitask-vision", "--preset", "smoke", "--out", str(tmp_path / "r"),
                 "--set", 'tasks=["left","middle"]', "--no-progress"])
    assert code == 2
    assert "'middle'" in capsys.readouterr().err


def test_missing_celeba_root_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "multitask-vision", "--preset", "celeba", "--out", str(tmp_path / "r"),
                 "--data-dir", str(tmp_path / "no-celeba"), "--no-progress"])
    assert code == 2
    assert "no-celeba" in capsys.readouterr().err


def test_sweep_over_modes_merges_tables(tmp_path):
    res = run_sweep("smoke", tmp_path / "sweep", modes=["alternating", "joint"],
                    policies=["shared", "bridged"],
                    storages=["fp32"], seeds=[0],
                    flags={"steps": 4, "cache_dir": tmp_path / "cache", "n_train": 256},
                    plots=True)
    configs = sorted(r["config"] for r in res["rows"])
    assert configs == ["bridged-fp32-alternating", "bridged-fp32-joint",
                       "shared-fp32-alternating", "shared-fp32-joint"]
    ranks = [r["mean_rank"] for r in res["rows"]]
    assert sum(ranks) == pytest.approx(1 + 2 + 3 + 4)  # ranks over 4 configs per task
    assert res["memory"]["bridged-fp32"] == 3 * res["memory"]["shared-fp32"]  # 24 vs 8 B/param
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "bridged | fp32 | joint" in report and "delta_m" in report
    assert (tmp_path / "sweep" / "delta_m.png").is_file()
    assert (tmp_path / "sweep" / "mode-joint" / "report.md").is_file()
