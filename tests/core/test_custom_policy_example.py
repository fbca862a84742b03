"""examples/custom_policy.py runs (small sizes), trains in both modes, and its policy fits in
under 40 lines."""

import importlib.util
import re
from pathlib import Path

import pytest

import moopt
from moopt.states.policy import POLICIES

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_policy.py"


@pytest.fixture
def example():
    spec = importlib.util.spec_from_file_location("custom_policy", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    POLICIES.unregister("shared_v")


def test_the_declaration_is_short():
    text = EXAMPLE.read_text()
    start = text.index('@moopt.register_policy("shared_v"')
    end = re.search(r"\n\n\ndef ", text[start:]).start() + start
    assert len(text[start:end].strip().splitlines()) < 40


def test_example_trains_in_both_modes_and_reports(example, capsys):
    assert "shared_v" in moopt.list_policies()
    start, _ = example.train(joint=False, steps=0, width=16)
    results = example.main(["--small"])
    out = capsys.readouterr().out
    for mode in ("alternating", "joint"):
        assert results[mode] < 0.8 * start, mode  # both modes learn
        assert f"{mode:11s} final loss" in out
    assert "kernel_report: [{'group': 0, 'path':" in out
    assert results["timing"]["ratio"] > 0 and "x fused AdamW" in out
