"""The unlearning demo (``make demo``) has the shape its claims need, checked without
running it: enough seeds for a paired comparison, a forget set large enough for forget
quality (a KS p-value) to take many values, and a grid that compares against shared fp32."""

from __future__ import annotations

import numpy as np
from moopt.tasks.unlearning.adapter import load_data
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.metrics import forget_quality
from moopt.tasks.unlearning.presets import DEMO

from moopt.runner.compare import CompareGrid
from moopt.runner.config import resolve_config


def test_demo_grid_has_enough_seeds_and_a_shared_baseline():
    cfg = resolve_config(UnlearningConfig, preset=DEMO, flags={})
    grid = CompareGrid.from_spec(DEMO["compare"], cfg)
    assert len(grid.seeds) >= 5 and len(set(grid.seeds)) == len(grid.seeds)
    assert len(grid.lrs) >= 3
    assert grid.baseline_config() == ("shared", "fp32")
    assert {p for p, _ in grid.configs} == {"shared", "decoupled", "bridged"}
    assert ("bridged", "fp32") in grid.configs
    assert cfg.threads == 1  # the measured budget is one CPU thread


def test_demo_forget_set_gives_forget_quality_many_values():
    cfg = resolve_config(UnlearningConfig, preset=DEMO, flags={})
    data = load_data(cfg)
    n = len(data.forget_eval)
    assert n >= 40 and len(data.forget) == n
    assert {it.subject for it in data.forget}.isdisjoint({it.subject for it in data.retain})
    # Forget quality compares n truth ratios with the retain-only model's n: the KS
    # statistic is a multiple of 1/n, so it can take n + 1 values; check that as many
    # distinct p-values come out.
    reference = np.linspace(0.1, 2.0, n)
    values = {forget_quality(np.concatenate([reference[:k] + 5.0, reference[k:]]), reference)
              for k in range(n + 1)}
    assert len(values) == n + 1
