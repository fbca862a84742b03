"""Stage-1 cache keys cover everything that changes the cached models: a run never reuses a
model trained with another seed or thread count (results would depend on the cache)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers", reason="the tasks need moopt[llm]")


def test_safety_key_covers_seed_and_threads():
    from moopt.tasks.safety.config import SafetyConfig
    from moopt.tasks.safety.sources import load_safety_data
    from moopt.tasks.safety.stage1 import cache_key

    data = load_safety_data(SafetyConfig())
    keys = {cache_key(SafetyConfig(**kw), data)
            for kw in ({}, {"seed": 1}, {"threads": 1}, {"threads": 2})}
    assert len(keys) == 4
    assert cache_key(SafetyConfig(lr=0.5, steps=3), data) == cache_key(SafetyConfig(), data)


def test_unlearning_key_covers_threads():
    from moopt.tasks.unlearning.config import UnlearningConfig
    from moopt.tasks.unlearning.embedded import make_embedded
    from moopt.tasks.unlearning.stage1 import cache_key

    data = make_embedded(n_people=4, n_forget=1, facts_per_person=2, n_utility=4)
    keys = {cache_key(UnlearningConfig(**kw), data) for kw in ({}, {"threads": 1}, {"seed": 3})}
    assert len(keys) == 3
