"""Smoke test of benchmarks/step_time.py on a tiny model: every row is produced and sane."""

import argparse

import pytest
import torch

from tests.benchmarks import load_script


@pytest.fixture(scope="module")
def step_time():
    return load_script("step_time")


def test_tiny_run_has_every_row(step_time, monkeypatch):
    monkeypatch.setitem(step_time.SIZES, "1M", (8, 8192))  # 8 tensors of 8192 values
    monkeypatch.setenv("MOOPT_COMPILE", "0")  # the compiled rows run eagerly (and say so)
    args = argparse.Namespace(sizes="1M", large=False, objectives="2", repeats=1, steps=2,
                              warmup=1, no_reference=False,
                              only="AdamW fused,bridged,shared_v", threads=1)
    report = step_time.run(args)
    rows = {r["label"]: r for r in report["results"]}
    for label in ("AdamW fused", "bridged fp32 N=2", "bridged int8 N=2 checked",
                  "bridged fp32 N=2 joint", "bridged int8 N=2 joint",
                  "bridged fp32 N=2 joint reference", "bridged fp32 N=2 reference",
                  "bridged int8 N=2 compiled", "bridged fp32 N=2 joint compiled",
                  "shared_v fp32 N=2", "shared_v int8 N=2 joint"):
        assert rows[label]["median_ms"] > 0 and rows[label]["first_step_ms"] > 0, label
    # Each row says which path stepped it.
    assert rows["bridged fp32 N=2"]["paths"] == ["native"]
    assert rows["bridged fp32 N=2 joint"]["paths"] == ["native"]
    assert rows["bridged int8 N=2 compiled"]["paths"] == ["eager"]
    assert rows["shared_v fp32 N=2"]["paths"] == ["eager"]
    assert rows["bridged fp32 N=2 reference"]["paths"] == ["reference"]
    assert rows["AdamW fused"]["ratio_to_fused_adamw_row"] == 1.0
    # Paired ratios: each row against the fused-AdamW steps taken beside its own.
    assert all(r["ratio_to_fused_adamw"] > 0 for r in rows.values())
    assert all(r["ratio_fast_partner"] > 0 for r in rows.values())
    # State bytes per parameter, as in ALGORITHMS.md section 4: (2 + 2N) buffers.
    assert rows["bridged fp32 N=2 joint"]["state_bytes_per_param"] == 24.0
    assert rows["bridged int8 N=2 joint"]["state_bytes_per_param"] == pytest.approx(
        6 * (1 + 4 / 256))


def test_fast_partner_ratio_takes_the_quietest_fifth(step_time):
    """Steps whose partner was among the fastest fifth: here the partner takes 1 ms and the
    step 3 ms in those, while noisy steps (partner 2-5 ms) would give other ratios."""
    gen = torch.Generator().manual_seed(0)
    noisy = (2 + 3 * torch.rand(40, generator=gen)).tolist()
    partners = [1.0] * 10 + noisy
    times = [3.0] * 10 + [4.0] * 40
    order = torch.randperm(50, generator=gen).tolist()
    got = step_time.fast_partner_ratio([times[i] for i in order], [partners[i] for i in order])
    assert got == 3.0
    assert step_time.fast_partner_ratio([2.0], [1.0]) == 2.0  # fewer than five steps


def test_first_step_measurement(step_time, monkeypatch):
    """What --compile-cost runs in each fresh process."""
    monkeypatch.setitem(step_time.SIZES, "1M", (8, 8192))
    monkeypatch.setenv("MOOPT_COMPILE", "0")
    got = step_time.first_step("bridged", "int8", "1M")
    assert got["first_step_s"] > 0 and got["second_step_s"] > 0
    assert got["paths"] == ["native"]


def test_many_small_tensors(step_time):
    """The "1M-small" set: 512 tensors of 2048 values, each with a gradient."""
    params = step_time.make_params(step_time.SIZES["1M-small"])
    assert len(params) == 512
    assert all(p.numel() == 2048 and p.grad.shape == p.shape for p in params)
