"""The three-way trade-off plot of a comparison."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("matplotlib", reason="plots need moopt[plots]")


def _row(group, lr, refusal, over, utility):
    return {"group": group, "lr": lr, "refusal_rate_mean": refusal, "refusal_rate_std": 0.1,
            "over_refusal_rate_mean": over, "over_refusal_rate_std": 0.0,
            "utility_mean": utility}


def test_plot_from_results_json(tmp_path):
    from moopt.tasks.safety.plots import main

    rows = [_row("shared-fp32", 1e-3, 0.5, 0.4, 0.6), _row("bridged-fp32", 1e-3, 0.9, 0.2, 0.7)]
    (tmp_path / "results.json").write_text(json.dumps({"aggregates": rows}))
    assert main([str(tmp_path)]) == 0
    png = tmp_path / "tradeoff3.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_errors(tmp_path):
    from moopt.tasks.safety.plots import main, plot_refusal_tradeoff

    assert main([str(tmp_path)]) == 2  # no results.json
    with pytest.raises(ValueError, match="no comparison row has all of"):
        plot_refusal_tradeoff([{"group": "g", "lr": 1.0}], tmp_path / "x.png")
