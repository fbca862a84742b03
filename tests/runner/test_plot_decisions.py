"""What the plots decide (not their pixels): axis scales, which panels exist, where legends
go, and that one seed shows no spread."""

from __future__ import annotations

import pytest

from moopt.runner.plots import axis_scale, seeds_note, varying_metrics

# The unlearning smoke run's losses: NPO's forget loss near 0.7, the retain loss falling from
# 2.5 to 0.03: on one linear axis the retain curve was a flat line at the bottom.
FORGET = [0.69, 0.8, 1.1, 1.6, 2.0, 2.4]
RETAIN = [2.5, 0.9, 0.3, 0.1, 0.05, 0.03]


def test_axis_scale_goes_logarithmic_across_decades():
    assert axis_scale(RETAIN) == "log"
    assert axis_scale(FORGET) == "linear"
    assert axis_scale([1.0, 100.0]) == "log" and axis_scale([1.0, 20.0]) == "linear"
    assert axis_scale([-1.0, 100.0]) == "linear"  # a log axis cannot show values <= 0
    assert axis_scale([0.0, 100.0]) == "linear"
    assert axis_scale([]) == "linear" and axis_scale([float("nan"), 1.0, 50.0]) == "log"


def test_constant_metrics_get_no_panel():
    evals = [(10, {"forget_quality": 0.1, "model_utility": 0.5, "n_items": 12.0}),
             (20, {"forget_quality": 0.4, "model_utility": 0.5, "n_items": 12.0})]
    assert varying_metrics(evals, ["forget_quality", "model_utility", "n_items"]) == [
        "forget_quality"]
    assert varying_metrics(evals[:1], ["forget_quality"]) == []  # one evaluation: no curve


def test_seeds_note():
    assert seeds_note([{"n": 1}, {"n": 1}]) == "n = 1 seed, no error bars"
    assert seeds_note([{"n": 3}]) == "mean, 95 % bootstrap interval over n = 3 seeds"
    assert seeds_note([{"n": 2}, {"n": 3}]) == "mean, 95 % bootstrap interval over n = 2-3 seeds"


mpl = pytest.importorskip("matplotlib", reason="plots need moopt[plots]")


def test_evals_plot_is_skipped_when_every_metric_is_constant(tmp_path):
    from moopt.runner.plots import plot_evals

    evals = [(1, {"a": 1.0}), (2, {"a": 1.0})]
    assert plot_evals(evals, tmp_path / "e.png", ["a"]) is None
    assert not (tmp_path / "e.png").exists()
    evals = [(1, {"a": 1.0, "b": 2.0}), (2, {"a": 1.0, "b": 3.0})]
    assert plot_evals(evals, tmp_path / "e.png", ["a", "b"]) == tmp_path / "e.png"


def _legend_and_axes_boxes(draw):
    from moopt.runner.plots import require_matplotlib

    plt = require_matplotlib()
    fig, ax = plt.subplots()
    legend = draw(ax)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    plt.close(fig)
    return boxes


@pytest.mark.parametrize("below", [False, True])
def test_legends_sit_outside_the_data(below):
    from moopt.runner.plots import legend_outside

    def draw(ax):
        ax.bar([0, 1], [0.9, 0.95], label="multi-task")  # tall bars fill every corner
        ax.bar([0.4, 1.4], [0.92, 0.97], label="single-task")
        return legend_outside(ax, below=below)

    legend, axes = _legend_and_axes_boxes(draw)
    assert not legend.overlaps(axes)


def _record(monkeypatch, method: str) -> list:
    """Calls of ``matplotlib.axes.Axes.<method>``: (axes, args, kwargs)."""
    from matplotlib.axes import Axes

    calls = []
    original = getattr(Axes, method)

    def wrapper(self, *args, **kwargs):
        calls.append((self, args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, method, wrapper)
    return calls


def test_one_seed_draws_no_error_bars(tmp_path, monkeypatch):
    from moopt.runner import plots as P

    calls = _record(monkeypatch, "errorbar")
    rows = [{"group": "g", "lr": 0.1, "n": 1, "a_mean": 1.0, "a_std": 0.0, "b_mean": 2.0,
             "b_std": 0.0}]
    P.plot_tradeoff(rows, "a", "b", tmp_path / "t.png")
    P.plot_lr_spread(rows, ["a", "b"], tmp_path / "l.png")
    assert len(calls) == 3
    assert all(kw.get("xerr") is None and kw.get("yerr") is None for _, _, kw in calls)
    calls.clear()
    two = {**rows[0], "n": 2, "a_std": 0.1, "a_low": 0.8, "a_high": 1.5, "b_low": 1.9,
           "b_high": 2.2}
    P.plot_tradeoff([two], "a", "b", tmp_path / "t.png")
    assert calls[0][2]["xerr"] == [[pytest.approx(0.2)], [pytest.approx(0.5)]]  # the interval
    assert calls[0][2]["yerr"] == [[pytest.approx(0.1)], [pytest.approx(0.2)]]


def test_losses_get_a_panel_and_a_scale_each(tmp_path, monkeypatch):
    from moopt.runner.plots import plot_losses

    calls = _record(monkeypatch, "set_yscale")
    losses = {"forget": list(enumerate(FORGET)), "retain": list(enumerate(RETAIN))}
    plot_losses(losses, tmp_path / "l.png")
    scales = [args[0] for _, args, _ in calls]
    assert scales == ["linear", "log"]  # sorted objectives: forget, retain
    assert len({id(ax) for ax, _, _ in calls}) == 2  # two panels, one y axis each


def test_error_bars_are_the_bootstrap_interval_not_the_spread():
    from moopt.runner.plots import error_bars, interval_bars
    from moopt.runner.stats import mean_interval

    values = [0.1, 0.15, 0.2, 0.9]  # skewed: the interval is not symmetric about the mean
    iv = mean_interval(values)
    point = {"n": 4, "m_mean": iv.estimate, "m_low": iv.low, "m_high": iv.high,
             "m_std": 0.37}
    below, above = interval_bars(point, "m")
    assert below == pytest.approx(iv.estimate - iv.low)
    assert above == pytest.approx(iv.high - iv.estimate)
    assert below != pytest.approx(above)
    assert interval_bars({**point, "n": 1}, "m") is None
    assert interval_bars({"n": 4, "m_mean": 1.0, "m_std": 0.1}, "m") is None  # no interval
    assert error_bars([(1.0, 2.0), (3.0, 4.0)]) == [[1.0, 3.0], [2.0, 4.0]]
    assert error_bars([(1.0, 2.0), None]) is None and error_bars([]) is None
