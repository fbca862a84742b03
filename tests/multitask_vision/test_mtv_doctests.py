"""The runnable examples in the docstrings of moopt.tasks.multitask_vision."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["dataset", "digits", "multimnist", "celeba", "models", "metrics", "evaluation",
           "config", "data", "setup", "baselines", "memory", "comparison", "adapter"]


@pytest.mark.parametrize("mod", MODULES)
def test_module_doctests(mod):
    module = importlib.import_module(f"moopt.tasks.multitask_vision.{mod}")
    result = doctest.testmod(module)
    assert result.failed == 0
    # celeba's example needs a real CelebA root and is marked +SKIP; the rest must run.
    assert result.attempted > 0 or mod == "celeba"
