"""The runnable examples in moopt.tasks.common docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["tokenizer", "models", "qa", "batching", "generate", "lm", "finetune", "prompt_format"]


@pytest.mark.parametrize("mod", MODULES)
def test_module_doctests(mod):
    pytest.importorskip("transformers", reason="the examples build tokenizers/models: moopt[llm]")
    result = doctest.testmod(importlib.import_module(f"moopt.tasks.common.{mod}"))
    assert result.attempted > 0 and result.failed == 0
