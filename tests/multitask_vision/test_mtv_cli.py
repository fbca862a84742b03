"""End to end: the smoke preset through ``moopt run``, and ``moopt compare`` over modes."""

from __future__ import annotations

import json

import pytest

from moopt.cli import main


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


def test_compare_over_modes_gives_one_side_by_side_table(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "multitask-vision", "--preset", "smoke", "--vary",
                 "mode=alternating,joint", "--policies", "shared,bridged", "--steps", "4",
                 "--set", "n_train=256", "--out", str(out), "--cache-dir",
                 str(tmp_path / "cache")])
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    rows = res["aggregates"]
    assert sorted(r["config"] for r in rows) == [
        "bridged-fp32-alternating", "bridged-fp32-joint",
        "shared-fp32-alternating", "shared-fp32-joint"]
    assert {r["mode"] for r in rows} == {"alternating", "joint"}
    assert sum(r["mean_rank"] for r in rows) == pytest.approx(1 + 2 + 3 + 4)
    # Each run really trained in its mode: joint runs keep the schedule "joint".
    for r in res["runs"]:
        cfg = json.loads((out / "runs" / r["label"] / "config.json").read_text())
        assert cfg["mode"] == r["axes"]["mode"]
        assert (cfg["schedule"] == "joint") == (r["axes"]["mode"] == "joint")
    report = (out / "report.md").read_text()
    assert "Side by side: policies x storages x mode" in report
    assert "| bridged | fp32 | joint | 1 |" in report and "state KiB" in report
    # memory_report(): bridged keeps 3x the state of shared for N = 2 (24 vs 8 B/param).
    state = {r["config"]: r["state_bytes"] for r in rows}
    assert state["bridged-fp32-joint"] == 3 * state["shared-fp32-joint"]
    assert (out / "delta_m.png").stat().st_size > 1000
    # The demo preset varies the mode; a mode set on the command line holds it.
    held = tmp_path / "held"
    code = main(["compare", "multitask-vision", "--preset", "demo", "--mode", "joint",
                 "--policies", "shared", "--storages", "fp32", "--seeds", "0", "--steps", "2",
                 "--set", "n_train=256", "--set", "n_test=64", "--out", str(held),
                 "--cache-dir", str(tmp_path / "cache"), "--no-plots"])
    assert code == 0, capsys.readouterr().err
    groups = {r["group"] for r in json.loads((held / "results.json").read_text())["runs"]}
    assert groups == {"shared-fp32-joint"}
