"""Claims of a comparison grid (moopt.runner.claims): which runs are paired with which,
recomputed here from the synthetic runs' values."""

from __future__ import annotations

import numpy as np
import pytest

from moopt.runner import stats as S
from moopt.runner.claims import build_claims
from moopt.runner.claims_report import claims_markdown, difference_cell


def _runs(values, *, axes=None):
    """``values[(policy, storage)][lr]`` -> list over seeds of the metric ``m``."""
    out = []
    for (pol, sto), per_lr in values.items():
        for lr, seeds in per_lr.items():
            for seed, v in enumerate(seeds):
                extra = dict(axes or {})
                out.append({"policy": pol, "storage": sto, "axes": extra, "lr": lr,
                            "seed": seed, "group": "-".join([pol, sto, *map(str, extra.values())]),
                            "metrics": {"m": v, "other": -v}})
    return out


RNG = np.random.default_rng(3)
VALUES = {
    ("shared", "fp32"): {0.1: list(RNG.normal(1.0, 0.1, 5)), 0.2: list(RNG.normal(2.0, 0.1, 5))},
    ("bridged", "fp32"): {0.1: list(RNG.normal(1.5, 0.1, 5)), 0.2: list(RNG.normal(1.6, 0.1, 5))},
    ("bridged", "int8"): {0.1: list(RNG.normal(1.5, 0.1, 5)), 0.2: list(RNG.normal(1.6, 0.1, 5))},
}


def test_every_configuration_is_paired_with_the_baseline_on_the_same_seeds():
    claims = build_claims(_runs(VALUES), baseline=("shared", "fp32"),
                          higher_is_better={"m": True, "other": False})
    assert claims["baseline"] == "shared-fp32"
    rows = [r for r in claims["per_lr"] if r["metric"] == "m"]
    assert {(r["group"], r["lr"]) for r in rows} == {
        (g, lr) for g in ("bridged-fp32", "bridged-int8") for lr in (0.1, 0.2)}
    for r in rows:
        pol, sto = r["group"].split("-")
        expect = S.paired_difference(VALUES[("shared", "fp32")][r["lr"]],
                                     VALUES[(pol, sto)][r["lr"]])
        assert r["estimate"] == pytest.approx(expect.difference.estimate)
        assert (r["low"], r["high"], r["p_value"]) == (expect.difference.low,
                                                       expect.difference.high, expect.p_value)
        assert r["seeds"] == [0, 1, 2, 3, 4]


def test_best_learning_rate_follows_the_metric_direction():
    claims = build_claims(_runs(VALUES), baseline=("shared", "fp32"),
                          higher_is_better={"m": True, "other": False})
    best = {(r["group"], r["metric"]): r for r in claims["best_lr"]}
    means = {k: {lr: np.mean(v) for lr, v in per.items()} for k, per in VALUES.items()}
    want = max(means[("bridged", "fp32")], key=means[("bridged", "fp32")].get)
    assert best[("bridged-fp32", "m")]["lr"] == want
    assert best[("bridged-fp32", "m")]["baseline_lr"] == 0.2
    # "other" = -m, lower is better: the same lrs win.
    assert best[("bridged-fp32", "other")]["lr"] == want
    assert best[("bridged-fp32", "other")]["baseline_lr"] == 0.2


def test_lr_spread_and_its_difference_to_the_baseline():
    claims = build_claims(_runs(VALUES), baseline=("shared", "fp32"), metrics=["m"])
    spread = {r["group"]: r for r in claims["lr_spread"]}
    base = np.array([VALUES[("shared", "fp32")][lr] for lr in (0.1, 0.2)]).T
    other = np.array([VALUES[("bridged", "fp32")][lr] for lr in (0.1, 0.2)]).T
    assert spread["shared-fp32"]["difference"] is None
    assert spread["shared-fp32"]["spread"]["estimate"] == pytest.approx(
        np.ptp(base.mean(axis=0)))
    d = spread["bridged-fp32"]["difference"]
    assert d["estimate"] == pytest.approx(np.ptp(other.mean(axis=0)) - np.ptp(base.mean(axis=0)))
    assert d["covers_zero"] is False and d["estimate"] < 0  # bridged is flatter here


def test_storage_is_compared_with_the_same_policy_in_the_baseline_storage():
    claims = build_claims(_runs(VALUES), baseline=("shared", "fp32"), metrics=["m"])
    rows = claims["storage"]
    assert {(r["group"], r["reference_group"], r["lr"]) for r in rows} == {
        ("bridged-int8", "bridged-fp32", 0.1), ("bridged-int8", "bridged-fp32", 0.2)}


def test_extra_axes_are_matched_not_mixed():
    runs = _runs({("shared", "fp32"): {0.1: [1.0, 1.1, 1.2]},
                  ("bridged", "fp32"): {0.1: [2.0, 2.1, 2.2]}}, axes={"mode": "joint"})
    runs += _runs({("shared", "fp32"): {0.1: [5.0, 5.1, 5.2]},
                   ("bridged", "fp32"): {0.1: [5.0, 5.1, 5.2]}}, axes={"mode": "alternating"})
    claims = build_claims(runs, baseline=("shared", "fp32"), metrics=["m"])
    by_group = {r["group"]: r for r in claims["per_lr"]}
    assert by_group["bridged-fp32-joint"]["baseline_group"] == "shared-fp32-joint"
    assert by_group["bridged-fp32-joint"]["estimate"] == pytest.approx(1.0)
    assert by_group["bridged-fp32-alternating"]["ties"] == 3


def test_unknown_baseline_names_the_configurations():
    with pytest.raises(ValueError, match="baseline decoupled/fp32 is not a configuration.*"
                                         "shared/fp32"):
        build_claims(_runs(VALUES), baseline=("decoupled", "fp32"))


def test_markdown_marks_intervals_that_cover_zero():
    claims = build_claims(_runs(VALUES), baseline=("shared", "fp32"),
                          higher_is_better={"m": True})
    rows = [{"group": g, "lr": lr, "n": 5, "m_mean": float(np.mean(v)), "m_low": 0.0,
             "m_high": 1.0} for (p, s), per in VALUES.items()
            for lr, v in per.items() for g in [f"{p}-{s}"]]
    text = claims_markdown(claims, rows, ["m"], {"m": True})
    for r in claims["per_lr"]:
        if r["metric"] != "m":
            continue
        cell = difference_cell(r, True)
        assert cell in text
        assert cell.startswith("~0") == (r["low"] <= 0.0 <= r["high"])
        if not cell.startswith("~0"):
            assert cell.startswith("**better**" if r["estimate"] > 0 else "**worse**")
    assert "smallest p the test can give is 0.062, so it cannot reach 0.05" in text
    assert "shared-fp32 (baseline)" in text and "Sensitivity to the learning rate" in text


def test_tradeoff_cells_judge_both_metrics_on_the_same_seeds():
    # x: higher is better, y: lower is better. bridged at lr 0.2 beats shared at lr 0.1
    # on both; at lr 0.1 it is better on x and worse on y.
    noise = [0.0, 0.01, -0.01, 0.02, -0.02]
    runs = []
    table = {("shared", 0.1): (1.0, 1.0), ("shared", 0.2): (2.0, 3.0),
             ("bridged", 0.1): (1.5, 2.0), ("bridged", 0.2): (1.5, 0.5)}
    for (pol, lr), (x, y) in table.items():
        for seed, e in enumerate(noise):
            runs.append({"policy": pol, "storage": "fp32", "axes": {}, "group": f"{pol}-fp32",
                         "lr": lr, "seed": seed, "metrics": {"x": x + e, "y": y + 2 * e}})
    claims = build_claims(runs, baseline=("shared", "fp32"), tradeoff=("x", "y"),
                          higher_is_better={"x": True, "y": False})
    cells = {(r["lr"], r["baseline_lr"]): r for r in claims["tradeoff"]}
    assert len(cells) == 4 and all(r["group"] == "bridged-fp32" for r in cells.values())
    for (lr, blr), r in cells.items():
        dx = table[("bridged", lr)][0] - table[("shared", blr)][0]
        dy = table[("bridged", lr)][1] - table[("shared", blr)][1]
        d = r["differences"]
        assert d["x"]["estimate"] == pytest.approx(dx) and d["y"]["estimate"] == pytest.approx(dy)
        want = {(True, True): "dominates", (False, False): "dominated"}.get(
            (dx > 0, dy < 0), "trade")
        assert r["verdict"] == want
    assert cells[(0.2, 0.1)]["verdict"] == "dominates"
    assert cells[(0.1, 0.2)]["verdict"] == "trade"
    text = claims_markdown(claims, [], ["x", "y"], {"x": True, "y": False})
    assert "### Trade-off: x and y together" in text
    assert "| bridged-fp32 lr 0.2 | **dominates** (+0.5, -0.5) | trade (-0.5, -2.5) |" in text


def test_rounding_noise_of_a_zero_difference_prints_as_zero():
    row = {"estimate": -3.47e-18, "low": -0.0375, "high": 0.0375, "n": 8, "wins": 1,
           "losses": 1, "ties": 6, "p_value": 1.0, "covers_zero": True}
    assert difference_cell(row, False) == "~0 +0 [-0.0375, +0.0375] 1/8 p=1"
    row = {**row, "estimate": -3.47e-4}
    assert difference_cell(row, False).startswith("~0 -0.000347 [")
