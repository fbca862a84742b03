"""moopt compare: grid, shared prepare, aggregates, report, resumption."""

from __future__ import annotations

import json
import statistics

import pytest

from moopt.runner.compare import CompareGrid, run_compare
from moopt.runner.config import resolve_config
from tests.runner.toy_task import ToyConfig, ToyTask


def test_grid_from_preset_skips_unregistered_storage_but_explicit_must_exist():
    base = ToyConfig()
    grid = CompareGrid.from_spec(ToyTask.presets["tiny"]["compare"], base)
    assert grid.configs == [("shared", "fp32"), ("bridged", "fp32")]
    assert "no-such-storage" in grid.skipped[0]
    assert len(grid.points()) == 2 * 2 * 2
    with pytest.raises(ValueError, match="'nope' not registered"):
        CompareGrid.from_spec(None, base, policies=["nope"])


def test_compare_runs_grid_with_one_prepare_and_aggregates(tmp_path):
    task = ToyTask()
    base = resolve_config(ToyConfig, preset=ToyTask.presets["tiny"],
                          flags={"cache_dir": tmp_path / "c", "steps": 6})
    grid = CompareGrid(configs=[("shared", "fp32"), ("decoupled", "fp32")], lrs=[0.01, 0.05],
                       seeds=[0, 1])
    out = tmp_path / "cmp"
    res = run_compare(task, base, grid, out, plots=True, run_plots=False)
    assert task.prepare_calls == 1
    assert len(res["runs"]) == 8
    for r in res["runs"]:
        assert (out / "runs" / r["label"] / "metrics.json").is_file()
    row = next(a for a in res["aggregates"] if a["group"] == "decoupled-fp32" and a["lr"] == 0.05)
    vals = [r["metrics"]["mse_a"] for r in res["runs"]
            if r["group"] == "decoupled-fp32" and r["lr"] == 0.05]
    assert row["mse_a_mean"] == pytest.approx(statistics.mean(vals), rel=1e-12)
    assert row["mse_a_std"] == pytest.approx(statistics.stdev(vals), rel=1e-12)
    report = (out / "report.md").read_text()
    assert "decoupled-fp32" in report and "Sensitivity to the learning rate" in report
    assert (out / "tradeoff.png").stat().st_size > 1000
    assert (out / "lr_spread.png").stat().st_size > 1000
    # Resume reuses the finished runs: prepare again, but no run is retrained.
    mtime = (out / "runs" / res["runs"][0]["label"] / "checkpoint.json").stat().st_mtime_ns
    again = run_compare(task, base, grid, out, resume=True, plots=False)
    assert (out / "runs" / res["runs"][0]["label"] / "checkpoint.json").stat().st_mtime_ns == mtime
    assert again["aggregates"] == res["aggregates"]
    assert json.loads((out / "results.json").read_text())["runs"][0]["metrics"]


def test_extra_axes_vary_config_fields_and_reach_the_task_summary(tmp_path):
    task = ToyTask()
    base = resolve_config(ToyConfig, preset=ToyTask.presets["tiny"],
                          flags={"cache_dir": tmp_path / "c", "steps": 4})
    grid = CompareGrid.from_spec({"policies": ["shared"], "seeds": [0, 1],
                                  "axes": {"dropout": [0.0, 0.5]}}, base,
                                 axes={"n_batches": [3]})
    assert grid.axes == {"dropout": [0.0, 0.5], "n_batches": [3]}
    out = tmp_path / "cmp"
    res = run_compare(task, base, grid, out, plots=False)
    assert sorted({r["group"] for r in res["runs"]}) == ["shared-fp32-0.0-3",
                                                         "shared-fp32-0.5-3"]
    for r in res["runs"]:
        cfg = json.loads((out / "runs" / r["label"] / "config.json").read_text())
        assert (cfg["dropout"], cfg["n_batches"]) == (r["axes"]["dropout"], 3)
    rows = json.loads((out / "results.json").read_text())["aggregates"]
    assert sorted(r["dropout"] for r in rows) == [0.0, 0.5] and all(r["n"] == 2 for r in rows)
    assert all("toy_sum" in r for r in rows)  # keys the task adds are saved
    report = (out / "report.md").read_text()
    assert "## Toy summary" in report and "2 dropout [0.0, 0.5]" in report
    # The grid's own fields and unknown fields are refused with the way out named.
    with pytest.raises(ValueError, match="use --lrs instead"):
        CompareGrid.from_spec(None, base, axes={"lr": [0.1]})
    with pytest.raises(ValueError, match="'dropuot' is not a config field"):
        CompareGrid.from_spec(None, base, axes={"dropuot": [0.1]})
