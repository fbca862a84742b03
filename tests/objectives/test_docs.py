"""The registration example of docs/objectives.md and the module doctests run as written."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest
import torch

from moopt.objectives import OBJECTIVES, ObjectiveContext, list_objectives

DOC = Path(__file__).resolve().parents[2] / "docs" / "objectives.md"
MODULES = ["base", "registry", "pairs", "forget", "retain", "generic", "lm_utils", "__init__"]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_registration_example_runs():
    blocks = _blocks()
    assert len(blocks) == 2
    # the documented listing is current (objectives registered elsewhere are not built-ins)
    builtins = [
        n
        for n in list_objectives()
        if OBJECTIVES.get(n).fn.__module__.startswith("moopt.objectives.")
    ]
    assert str(builtins) in blocks[0]
    ns: dict = {}
    try:
        exec(compile(blocks[1], str(DOC), "exec"), ns)
        obj = ns["loss_fn"]
        assert obj.info.role == "retain" and obj.info.needs_reference
        assert obj.info.description.startswith("Squared distance")

        class Lin(torch.nn.Module):
            def __init__(self, seed: int) -> None:
                super().__init__()
                self.emb = torch.nn.Embedding(7, 7)
                gen = torch.Generator().manual_seed(seed)
                torch.nn.init.normal_(self.emb.weight, generator=gen)

            def forward(self, input_ids, attention_mask=None):
                return self.emb(input_ids)

        ids = torch.tensor([[1, 2, 3]])
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
        a, b = Lin(0), Lin(1)
        out = obj(a, batch, ObjectiveContext(ref_model=b))
        expect = 0.5 * ((a.emb(ids) - b.emb(ids)) ** 2).mean()
        torch.testing.assert_close(out, expect)
    finally:
        if "logit_l2" in OBJECTIVES:
            OBJECTIVES.unregister("logit_l2")


@pytest.mark.parametrize("mod", MODULES)
def test_module_doctests(mod):
    name = "moopt.objectives" if mod == "__init__" else f"moopt.objectives.{mod}"
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
