"""``moopt compare --baseline``: the configuration the report's claims compare with."""

from __future__ import annotations

import json

import pytest

from moopt.cli import main, parse_baseline

TOY = "tests.runner.toy_task:ToyTask"


def test_baseline_flag_and_re_report_on_resume(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", TOY, "--policies", "shared,bridged", "--lrs", "0.05", "--seeds", "0,1",
            "--steps", "2", "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--no-plots"]
    assert main(argv + ["--baseline", "bridged/fp32"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["claims"]["baseline"] == "bridged-fp32"
    row = next(a for a in results["aggregates"] if a["group"] == "shared-fp32")
    assert f"mse_a {row['mse_a_mean']:.3g} [{row['mse_a_low']:.3g}, " in printed
    assert {r["group"] for r in results["claims"]["per_lr"]} == {"shared-fp32"}
    label = results["runs"][0]["label"]
    mtime = (out / "runs" / label / "checkpoint.json").stat().st_mtime_ns
    # Another baseline on the same runs: nothing is retrained, the claims are redone.
    assert main(argv + ["--resume", "--baseline", "shared"]) == 0, capsys.readouterr().err
    assert (out / "runs" / label / "checkpoint.json").stat().st_mtime_ns == mtime
    again = json.loads((out / "results.json").read_text())
    assert again["claims"]["baseline"] == "shared-fp32"
    assert "## Claims against the baseline `shared-fp32`" in (out / "report.md").read_text()
    assert main(argv + ["--resume", "--baseline", "decoupled/fp32"]) == 2
    assert ("--baseline decoupled/fp32 is not a configuration of the grid; configurations: "
            "shared/fp32, bridged/fp32") in capsys.readouterr().err


def test_parse_baseline():
    assert parse_baseline("shared/fp32") == ("shared", "fp32")
    assert parse_baseline("bridged") == ("bridged", None)
    assert parse_baseline("bridged/base=fp32,delta=int8") == (
        "bridged", {"base": "fp32", "delta": "int8"})
    for bad in ("/fp32", "shared/"):
        with pytest.raises(Exception, match="expected POLICY or POLICY/STORAGE"):
            parse_baseline(bad)
