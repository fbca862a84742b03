"""The runnable examples in the docstrings of the runner, the CLI and the unlearning
adapter modules (doctest)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "moopt.runner.task", "moopt.runner.config", "moopt.runner.data", "moopt.runner.discovery",
    "moopt.runner.checkpoint", "moopt.runner.history", "moopt.runner.rundir",
    "moopt.runner.loop", "moopt.runner.run", "moopt.runner.report", "moopt.runner.compare",
    "moopt.runner.plots", "moopt.cli", "moopt.tasks.unlearning.adapter",
    "moopt.tasks.unlearning.config", "moopt.tasks.unlearning.presets",
    "moopt.tasks.unlearning.stage1", "moopt.tasks.unlearning.lm_io",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
