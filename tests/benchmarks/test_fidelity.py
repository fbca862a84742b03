"""Smoke test of benchmarks/fidelity.py: a short run writes every row, the float64 reference
agrees with the plain re-implementation, and the rows mean what they say."""

import json

import pytest
import torch

import moopt
from tests.benchmarks import load_script


@pytest.fixture(scope="module")
def fidelity():
    return load_script("fidelity")


@pytest.fixture(scope="module")
def report(fidelity, tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity")
    assert fidelity.main(["--out", str(out), "--size", "4096", "--steps", "12"]) == 0
    assert (out / "fidelity.png").stat().st_size > 0
    return json.loads((out / "fidelity.json").read_text())


def test_every_policy_storage_and_stream_has_a_row(fidelity, report):
    got = {(r["stream"], r["schedule"], r["policy"], r["variant"]) for r in report["results"]}
    want = {(s, sched, p, label) for s in fidelity.STREAMS for sched in fidelity.SCHEDULES
            for p in moopt.list_policies() for label, _, _ in fidelity.variants(p)}
    want |= {(s, sched, "bridged", "paper fp32") for s in fidelity.STREAMS
             for sched in fidelity.SCHEDULES}
    assert got == want
    for row in report["results"]:
        assert 0 <= row["p10"] <= row["median"] <= row["p90"], row
        assert -1 <= row["cosine"] <= 1 and row["relative_error"] >= 0 and row["max_step_lr"] > 0


def test_float64_reference_is_the_spec(report):
    # moopt in float64 against the rules re-derived in plain torch inside the benchmark.
    deviations = report["float64_check"]["max_relative_deviation_from_plain_float64"]
    assert set(deviations) == {"shared", "decoupled", "bridged"}
    assert max(deviations.values()) < 1e-8


def test_rows_measure_what_they_claim(report):
    rows = {(r["stream"], r["schedule"], r["policy"], r["variant"]): r for r in report["results"]}
    for (_, _, policy, variant), row in rows.items():
        if policy in ("shared", "decoupled") and variant == "fp32":
            # float32 Adam follows float64 to rounding.
            assert row["relative_error"] < 1e-5 and row["median"] == pytest.approx(1, abs=1e-5)
        if policy == "bridged" and variant in ("bf16", "int8"):
            assert row["max_step_lr"] <= 3 * (1 + 1e-6)  # the lossy-storage step bound
    for stream in ("conflict", "well"):
        # Without the guard the same low-bit run is not bounded by it.
        assert max(rows[(stream, s, "bridged", "int8 guard off")]["max_step_lr"]
                   for s in ("1:5", "1:1")) > 3
    for info in report["streams"]:
        assert info["float64_max_step_lr"] >= info["float64_max_direction_where_uncancelled"]
        assert 0 <= info["float64_share_of_steps_above_3lr"] < 1


def test_gradient_streams(fidelity):
    forget_heavy = fidelity.gradient_stream("conflict", (1, 1), 20000, 4, seed=0)
    assert [k for k, _ in forget_heavy] == ["forget", "retain", "forget", "retain"]
    ratio = forget_heavy[0][1].norm() / forget_heavy[1][1].norm()
    assert ratio == pytest.approx(3, rel=0.05)
    well = fidelity.gradient_stream("well", (1, 5), 20000, 6, seed=0)
    assert [k for k, _ in well] == ["forget"] + ["retain"] * 5
    assert well[0][1].norm() / well[1][1].norm() == pytest.approx(1, rel=0.05)
    again = fidelity.gradient_stream("well", (1, 5), 20000, 6, seed=0)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(well, again))
    quiet = fidelity.gradient_stream("quiet", (1, 1), 20000, 6, seed=0)
    loud, hushed = quiet[2][1], quiet[3][1]  # the second half: even coordinates 1e-4 smaller
    assert hushed[::2].abs().median() < 1e-3 * loud[::2].abs().median()
    assert hushed[1::2].abs().median() > 0.5 * loud[1::2].abs().median()


def test_bad_arguments(fidelity, tmp_path):
    for bad in (["--streams", "nope"], ["--schedules", "2:3"], ["--steps", "0"],
                ["--policies", "nope"], ["--conflict-cos", "-2"]):
        with pytest.raises(SystemExit):
            fidelity.main(["--out", str(tmp_path), *bad])
