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


def _table_row(report: str, heading: str, first_cell: str) -> list[str]:
    """Cells of the row starting with ``first_cell`` in the first table after ``heading``."""
    section = report.split(heading, 1)[1]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} after {heading!r}")


def test_report_claims_match_an_independent_recomputation(tmp_path):
    """Intervals, paired comparisons and the covers-0 marker of the report, recomputed
    here from the runs' metrics with scipy directly."""
    import numpy as np
    from scipy.stats import bootstrap

    task = ToyTask()
    base = resolve_config(ToyConfig, preset=ToyTask.presets["tiny"],
                          flags={"cache_dir": tmp_path / "c", "steps": 4})
    grid = CompareGrid.from_spec({"configs": [["shared", "fp32"], ["decoupled", "fp32"]],
                                  "lrs": [0.01, 0.05], "seeds": [0, 1, 2, 3]}, base,
                                 baseline=("shared", "fp32"))
    out = tmp_path / "cmp"
    res = run_compare(task, base, grid, out, plots=False)
    report = (out / "report.md").read_text()
    assert "## Claims against the baseline `shared-fp32`" in report
    assert "smallest p the test can give is 0.12" in report  # 2 / 2^4

    def value(group, lr, seed, metric):
        (r,) = [r for r in res["runs"] if (r["group"], r["lr"], r["seed"]) == (group, lr, seed)]
        return r["metrics"][metric]

    def percentile_ci(x):
        ci = bootstrap((np.asarray(x),), np.mean, n_resamples=9999, method="percentile",
                       rng=np.random.default_rng(0)).confidence_interval
        return float(ci.low), float(ci.high)

    checked = 0
    for metric in ("mse_a", "mse_b"):  # both lower is better
        cells = _table_row(report, f"### {metric} (lower is better)", "decoupled-fp32")
        for lr, cell in zip(grid.lrs, cells[1:3]):
            pairs = sorted((value("shared-fp32", lr, s, metric),
                            value("decoupled-fp32", lr, s, metric)) for s in grid.seeds)
            d = [b - a for a, b in pairs]
            if all(x == d[0] for x in d):
                continue  # degenerate: nothing to resample
            low, high = percentile_ci(d)
            stored = next(r for r in res["claims"]["per_lr"]
                          if (r["metric"], r["group"], r["lr"]) == (metric, "decoupled-fp32", lr))
            assert (stored["low"], stored["high"]) == pytest.approx((low, high), rel=1e-12)
            assert stored["estimate"] == pytest.approx(statistics.mean(d), rel=1e-12)
            assert f"[{low:+.3g}, {high:+.3g}]" in cell
            assert f"{sum(x < 0 for x in d)}/4" in cell  # seeds where decoupled was better
            covers = low <= 0.0 <= high
            assert cell.startswith("~0") == covers, cell
            if not covers:
                assert cell.startswith("**better**" if high < 0 else "**worse**")
            checked += 1
        # The baseline's own row: means with their intervals.
        base_cells = _table_row(report, f"### {metric} (lower is better)",
                                "shared-fp32 (baseline)")
        vals = sorted(value("shared-fp32", 0.01, s, metric) for s in grid.seeds)
        low, high = percentile_ci(vals)
        assert base_cells[1] == f"{statistics.mean(vals):.3g} [{low:.3g}, {high:.3g}]"
    assert checked >= 3
    # The trade-off matrix: decoupled at lr 0.05 against shared at lr 0.01, both metrics.
    marks = []
    for metric in ("mse_a", "mse_b"):
        pairs = sorted((value("shared-fp32", 0.01, s, metric),
                        value("decoupled-fp32", 0.05, s, metric)) for s in grid.seeds)
        d = [b - a for a, b in pairs]
        low, high = percentile_ci(d)
        marks.append(0 if low <= 0.0 <= high else (1 if high < 0 else -1))  # lower is better
    verdict = ({(1, 1): "**dominates**", (-1, -1): "**dominated**"}.get(tuple(marks))
               or ("trade" if marks[0] * marks[1] == -1 else "not shown"))
    row = _table_row(report, "decoupled-fp32 vs shared-fp32", "decoupled-fp32 lr 0.05")
    assert row[1].startswith(verdict + " ("), (row, marks)
    assert "### Sensitivity to the learning rate" in report
    spread = _table_row(report, "### Sensitivity to the learning rate", "decoupled-fp32")
    per_lr = {lr: [value("decoupled-fp32", lr, s, "mse_a") for s in grid.seeds]
              for lr in grid.lrs}
    means = [statistics.mean(v) for v in per_lr.values()]
    assert spread[1].startswith(f"{max(means) - min(means):.3g} [")


def test_one_seed_shows_n_and_no_interval(tmp_path):
    task = ToyTask()
    base = resolve_config(ToyConfig, preset=ToyTask.presets["tiny"],
                          flags={"cache_dir": tmp_path / "c", "steps": 2})
    grid = CompareGrid(configs=[("shared", "fp32"), ("bridged", "fp32")], lrs=[0.05],
                       seeds=[3])
    res = run_compare(task, base, grid, tmp_path / "cmp", plots=False)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "±" not in report
    (row,) = [a for a in res["aggregates"] if a["group"] == "shared-fp32"]
    assert row["mse_a_low"] is None and row["mse_a_high"] is None
    assert f"{row['mse_a_mean']:.3g} (n=1)" in report
    assert "(n=1, no interval)" in report


def test_baseline_from_preset_flag_or_first_configuration():
    base = ToyConfig()
    spec = {"configs": [["shared", "fp32"], ["bridged", "fp32"]], "baseline": ["bridged", "fp32"]}
    assert CompareGrid.from_spec(spec, base).baseline_config() == ("bridged", "fp32")
    assert CompareGrid.from_spec(spec, base, baseline=("shared", None)).baseline_config() == (
        "shared", "fp32")
    # The preset's baseline left out by --policies: the first configuration instead.
    grid = CompareGrid.from_spec(spec, base, policies=["shared", "decoupled"])
    assert grid.baseline_config() == ("shared", "fp32")
    with pytest.raises(ValueError, match="--baseline decoupled/int8 is not a configuration of "
                                         "the grid; configurations: shared/fp32, bridged/fp32"):
        CompareGrid.from_spec(spec, base, baseline=("decoupled", "int8"))
