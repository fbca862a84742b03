"""The code examples in docs/ run as written."""

import re
from pathlib import Path

import numpy as np
import torch

import moopt

DOCS = Path(__file__).resolve().parents[2] / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_custom_policy_example_runs_and_is_correct():
    blocks = python_blocks(DOCS / "extending.md")
    assert blocks, "docs/extending.md has no python example"
    code = blocks[0]
    assert len(code.strip().splitlines()) < 45
    namespace: dict = {}
    exec(compile(code.replace('register_policy("shared_v")',
                              'register_policy("shared_v", overwrite=True)'),
                 "extending.md", "exec"), namespace)
    assert "shared_v" in moopt.list_policies()
    # Check the rule against a float64 hand derivation over a 1:2 schedule.
    rng = np.random.default_rng(0)
    p = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = moopt.MultiObjectiveOptimizer([p], ["f", "r"], "shared_v", lr=0.1)
    theta, v, m, t = np.zeros(5), np.zeros(5), {"f": np.zeros(5), "r": np.zeros(5)}, {"f": 0,
                                                                                     "r": 0}
    for T, k in enumerate(["f", "r", "r"] * 4, start=1):
        g = rng.normal(size=5)
        p.grad = torch.tensor(g)
        opt.step(objective=k)
        t[k] += 1
        m[k] = 0.9 * m[k] + 0.1 * g
        v = 0.95 * v + 0.05 * g * g
        theta -= 0.1 * (m[k] / (1 - 0.9 ** t[k])) / (np.sqrt(v / (1 - 0.95**T)) + 1e-8)
    assert np.max(np.abs(p.detach().numpy() - theta)) < 1e-12
    moopt.states.policy.POLICIES.unregister("shared_v")


def test_readme_example_runs(capsys):
    readme = Path(__file__).resolve().parents[2] / "README.md"
    code = python_blocks(readme)[0]
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "24.0"
