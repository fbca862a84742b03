"""Smoke test of benchmarks/quality.py: a short run produces every row, and its ratios mean
what they say (early on, float64, a 1e-6 perturbation and bf16 all sit next to fp32)."""

import json

import pytest

from tests.benchmarks import load_script


@pytest.fixture(scope="module")
def quality():
    return load_script("quality")


def test_short_run_writes_every_row(quality, tmp_path):
    assert quality.main(["--out", str(tmp_path), "--seeds", "2", "--steps", "6"]) == 0
    report = json.loads((tmp_path / "quality.json").read_text())
    rows = {(r["toy"], r["policy"]): r for r in report["results"]}
    assert set(rows) == {(t, p) for t in quality.TOYS for p in quality.POLICIES}
    for row in rows.values():
        assert [s["seed"] for s in row["seeds"]] == [0, 1]
        for v in quality.VARIANTS:
            s = row["summary"][v]
            assert 0 < s["min"] <= s["median"] <= s["max"]
            # Six steps cannot move the end point far: every variant within 5% of fp32.
            assert s["max"] < 1.05 and s["min"] > 0.95, (row["toy"], row["policy"], v, s)
        # Six steps: float64 and fp32 still agree to a fraction of a percent (bridged's
        # guard binds on the coordinates where v_k^ + v_b^ cancels, which last-bit rounding
        # decides: the multitask toy's bridged ratio sits at 0.994-0.998 over seeds 0-1).
        assert row["summary"]["float64"]["median"] == pytest.approx(1.0, abs=1e-2)
    assert (tmp_path / "quality.png").stat().st_size > 0


def test_losses_fall_and_toys_differ(quality):
    """Both toys train: 60 steps take a fifth of the loss off at least."""
    for toy in quality.TOYS:
        start = quality.final_loss(toy, "shared", "fp32", 0, 0)
        assert quality.final_loss(toy, "shared", "fp32", 0, 60) < 0.8 * start, toy


def test_bad_arguments(quality, tmp_path):
    with pytest.raises(SystemExit):
        quality.main(["--out", str(tmp_path), "--toys", "nope"])
    with pytest.raises(SystemExit):
        quality.main(["--out", str(tmp_path), "--steps", "0"])
