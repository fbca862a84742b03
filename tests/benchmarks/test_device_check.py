"""benchmarks/device_check.py (``make device-check``): without CUDA it says so and exits 0;
its smoke-run check reads a real run (on the CPU here, through the same code)."""

from __future__ import annotations

import pytest
import torch

from tests.benchmarks import load_script


@pytest.fixture(scope="module")
def device_check():
    return load_script("device_check")


def test_without_cuda_it_says_so_and_exits_0(device_check, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_check.main(["--out", str(tmp_path / "dc")]) == 0
    out = capsys.readouterr().out
    assert "no CUDA device" in out and out.count("\n") == 1
    assert not (tmp_path / "dc").exists()


def test_smoke_run_reads_the_run_it_started(device_check, tmp_path):
    ok = device_check.smoke_run("tests.runner.toy_task:ToyTask", tmp_path, 300,
                                tmp_path / "cache", preset="tiny", device="cpu")
    assert ok["ok"], ok["output_tail"]
    assert ok["status"] == "finished" and ok["hardware"]["precision"] == "bf16-mixed"
    assert set(ok["metrics"]) >= {"mse_a", "mse_b"}


def test_smoke_run_of_a_failing_command_is_not_ok(device_check, tmp_path):
    bad = device_check.smoke_run("no-such-task", tmp_path, 120, tmp_path / "cache",
                                 device="cpu")
    assert not bad["ok"] and bad["returncode"] == 2
