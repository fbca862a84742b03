"""The moopt command line on the toy task of tests/runner (and `python -m moopt`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moopt.cli import main, parse_storage, task_options
from tests.runner.toy_task import ToyConfig

TOY = "tests.runner.toy_task:ToyTask"


def test_run_with_flags_task_options_and_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", TOY, "--preset", "tiny", "--policy", "decoupled", "--lr", "0.02",
                 "--steps", "5", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--dropout", "0.0", "--n-batches=3", "--set", "lr_ratios.a=2", "--no-plots"])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["policy"], cfg["lr"], cfg["steps"], cfg["dropout"], cfg["n_batches"]) == (
        "decoupled", 0.02, 5, 0.0, 3)
    assert cfg["lr_ratios"] == {"a": 2.0} and cfg["preset"] == "tiny" and cfg["task"] == "toy"
    assert cfg["schedule"] == {"a": 1, "b": 2}  # from the preset
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"mse_a", "mse_b"}
    assert "run finished" in capsys.readouterr().out
    # Same directory, different config: refused with exit status 2 and the differing key.
    code = main(["run", TOY, "--lr", "0.03", "--steps", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "holds another run" in err and "lr: 0.02 -> 0.03" in err


def test_errors_are_clear(tmp_path, capsys):
    assert main(["run", "no-such-task", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'no-such-task'; known tasks:" in err and "unlearning" in err
    assert main(["run", TOY, "--preset", "huge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'huge' of task 'toy'; presets: tiny" in capsys.readouterr().err
    assert main(["run", TOY, "--dropuot", "0.1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown option --dropuot" in err and "--dropout" in err
    assert main(["run", TOY, "--set", "lrr=1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key 'lrr' (did you mean 'lr'?)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written on a config error


def test_compare_writes_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", TOY, "--policies", "shared,bridged", "--lrs", "0.01,0.05",
                 "--seeds", "0", "--steps", "4", "--out", str(out), "--cache-dir",
                 str(tmp_path / "c"), "--no-plots"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert sorted({r["group"] for r in results["runs"]}) == ["bridged-fp32", "shared-fp32"]
    assert "bridged-fp32 lr=0.05" in capsys.readouterr().out


def test_helpers():
    assert parse_storage("int8") == "int8"
    assert parse_storage("base=fp32,delta=int8") == {"base": "fp32", "delta": "int8"}
    assert task_options(["--dropout", "0.5", "--n-batches=2"], ToyConfig, "toy") == {
        "dropout": 0.5, "n_batches": 2}


def test_python_dash_m_lists_tasks_policies_objectives():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "moopt", "list"], cwd=root, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("tasks:", "unlearning", "policies: ", "bridged", "storages: ", "fp32",
                 "npo"):
        assert word in proc.stdout


@pytest.mark.parametrize("argv", [["run"], ["compare", TOY]])
def test_argument_errors_exit_with_usage(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv) if argv[0] == "run" else main(argv + ["--steps", "x"])
    assert exc.value.code == 2
