"""The package layers, read from the import statements: the base layer imports nothing of
moopt's, states/ and objectives/ build on it, policies never import the fast path (the
optimizer chooses it), and nothing in states/ imports the core."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "moopt"


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "moopt" or name.startswith("moopt.")}


def modules(folder: str):
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("base"), ids=lambda p: p.name)
def test_base_layer_imports_only_itself(path):
    assert all(name.startswith("moopt.base") for name in imports(path)), imports(path)


@pytest.mark.parametrize("path", modules("states") + modules("objectives"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_states_and_objectives_build_on_the_base_layer(path):
    # Not the core's re-export modules, not the optimizer, runner or CLI.
    core = {"moopt.errors", "moopt.registry", "moopt.optimizer", "moopt.state_format",
            "moopt.validation", "moopt.runner", "moopt.cli"}
    assert not imports(path) & core, imports(path)


@pytest.mark.parametrize("path", [p for p in modules("states") if "fast" not in p.parts
                                  and p.name != "int8.py"], ids=lambda p: p.name)
def test_only_the_optimizer_reaches_the_fast_path(path):
    """int8.py is the one exception: its read/write use the native codec (same bytes as the
    torch codec) when it is built."""
    assert not any(name.startswith("moopt.states.fast") for name in imports(path))
