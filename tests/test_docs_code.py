"""Every code block of README.md and docs/ runs as written, or says on purpose why not.

Conventions (for writers of the docs):

* Every block is fenced with a language. ``python`` blocks run; ``bash`` blocks are command
  lines; ``toml`` blocks are parsed; ``text`` blocks are not code (command synopses,
  formulas, output).
* A block whose first line is ``# fragment: <why>`` is shown without what it needs (a
  checkpoint of your own, a data set that is not downloaded, minutes of CPU) and is not run.
  The reason is required.
* The ``python`` blocks of one page run in order in one namespace (a page reads like a
  notebook), in an empty working directory. docs/distributed.md's blocks form one script
  that runs under ``torchrun --nproc_per_node 2``, as that page says.
* ``bash`` commands are checked without doing their work: ``moopt ...`` (also ``python -m
  moopt``, ``torchrun ... -m moopt``) with ``--dry-run``, which resolves and validates the
  whole config (presets, options, data folders) and stops; ``make TARGET`` with ``make -n``;
  ``python -m MODULE ...`` with ``--help``. The slow test (``-m slow``) runs the ``moopt``
  commands for real at a reduced size: ``--steps 4`` for every run and ``--seeds 0`` for
  every comparison, appended to the command as written.
* Commands and blocks that use ``$MOOPT_DATA_DIR`` need the real data: they run when the
  data is found (``$MOOPT_DATA_DIR``, else ``../shared/data`` beside the repository) and are
  skipped otherwise, saying so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = {"python", "bash", "toml", "text"}
TORCHRUN_PAGES = {"docs/distributed.md"}
FRAGMENT = re.compile(r"#\s*fragment:\s*(.*)")


def _data_dir() -> Path | None:
    env = os.environ.get("MOOPT_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate.resolve()
    return None


DATA = _data_dir()


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str

    @property
    def fragment(self) -> str | None:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        match = FRAGMENT.fullmatch(first.strip())
        return match.group(1).strip() if match else None

    @property
    def needs_data(self) -> bool:
        return "MOOPT_DATA_DIR" in self.code

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(path: Path) -> list[Block]:
    out, lang, start, body = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), number, []
            else:
                out.append(Block(str(path.relative_to(ROOT)), start, lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    return out


BLOCKS = [b for page in PAGES for b in _blocks(page)]


def _ids(blocks):
    return [str(b) for b in blocks]


# ---- conventions -----------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCKS, ids=_ids(BLOCKS))
def test_every_block_has_a_language_and_fragments_say_why(block):
    assert block.lang in LANGUAGES, f"{block}: fence with one of {sorted(LANGUAGES)}"
    if block.fragment is not None:
        assert len(block.fragment) >= 10, f"{block}: say why it is a fragment"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_no_indented_command_outside_a_fence(page):
    inside = False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            inside = not inside
        elif not inside and re.match(r" {4,}(moopt|python|make|torchrun|pip) ", line):
            pytest.fail(f"{page.name}:{number}: an indented command; fence it as ```bash")


def test_docs_code_and_reports_do_not_point_to_files_users_lack():
    """Users have no ../shared and no ALGORITHMS.md: the docs carry their formulas."""
    files = [*PAGES, *(ROOT / "moopt").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]
    bad = [f"{f.relative_to(ROOT)}:{i}" for f in files
           for i, line in enumerate(f.read_text().splitlines(), 1)
           if "ALGORITHMS.md" in line or "../shared" in line or "shared/spec" in line]
    assert bad == []


# ---- python --------------------------------------------------------------------------------


def _page_code(page: str) -> list[Block]:
    return [b for b in BLOCKS if b.page == page and b.lang == "python" and not b.fragment]


PYTHON_PAGES = sorted({b.page for b in BLOCKS if b.lang == "python" and not b.fragment}
                      - TORCHRUN_PAGES)
OPTIONAL = ("transformers", "peft", "matplotlib", "torchvision")


def _skip_without_optional_deps(code: str) -> None:
    for name in OPTIONAL:
        if re.search(rf"^\s*(from|import) {name}\b", code, re.M) \
                and importlib.util.find_spec(name) is None:
            pytest.skip(f"the example needs {name} (an optional extra)")


@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = _page_code(page)
    _skip_without_optional_deps("\n".join(b.code for b in blocks))
    if any(b.needs_data for b in blocks):
        if DATA is None:
            pytest.skip(f"{page} uses $MOOPT_DATA_DIR; the real data is not here")
        monkeypatch.setenv("MOOPT_DATA_DIR", str(DATA))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOOPT_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        code = block.code
        if 'register_policy("shared_v")' in code:  # the policy may exist from another test
            code = code.replace('register_policy("shared_v")',
                                'register_policy("shared_v", overwrite=True)')
        if "register_storage(" in code or "register_objective(" in code:
            code = re.sub(r"(register_(?:storage|objective)\(\"\w+\"(?:, [^)]*)?)\)",
                          lambda m: m.group(1) + ", overwrite=True)"
                          if "overwrite" not in m.group(1) else m.group(0), code)
        exec(compile(code, str(block), "exec"), namespace)


@pytest.mark.distributed
@pytest.mark.parametrize("page", sorted(TORCHRUN_PAGES))
def test_torchrun_pages_run_on_two_ranks(page, tmp_path):
    """The page's blocks, one script, two gloo ranks. Each rank writes a file when the
    script is done: torch's gloo may abort at exit in about 1 of 10 runs (known, not ours)."""
    script = "\n".join(b.code for b in _page_code(page))
    script += ("\nimport pathlib, torch.distributed as _d\n"
               "pathlib.Path(f'done-{_d.get_rank()}').write_text('ok')\n")
    (tmp_path / "script.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           "2", "script.py"], cwd=tmp_path, env=env, text=True,
                          capture_output=True, timeout=300)
    done = sorted(p.name for p in tmp_path.glob("done-*"))
    assert done == ["done-0", "done-1"], proc.stdout[-3000:] + proc.stderr[-3000:]
    if proc.returncode != 0:
        assert "terminate called without an active exception" in proc.stderr, proc.stderr


def test_task_adapter_example_runs_from_the_command_line(tmp_path, monkeypatch, capsys):
    """docs/runner.md: the adapter block saved as my_task.py runs with `moopt run`."""
    from moopt.cli import main

    block = next(b for b in _page_code("docs/runner.md") if "class MyTask" in b.code)
    (tmp_path / "my_task.py").write_text(block.code)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["run", "my_task:MyTask", "--steps", "5", "--out", "runs/mine",
                 "--no-plots"]) == 0
    assert "mse_a" in capsys.readouterr().out
    assert main(["run", "my_task:MyTask", "--help"]) == 0
    assert "width of the hidden layer" in " ".join(capsys.readouterr().out.split())
    sys.modules.pop("my_task", None)


# ---- bash and toml -------------------------------------------------------------------------


def _commands(block: Block) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", block.code)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


SHELL = [b for b in BLOCKS if b.lang == "bash" and not b.fragment]
COMMANDS = [(b, c) for b in SHELL for c in _commands(b)]


def _moopt_argv(command: str) -> list[str] | None:
    """The moopt arguments of a command line (``moopt``, ``python -m moopt``, ``torchrun
    ... -m moopt``), without its comment; ``None`` for other commands."""
    words = shlex.split(os.path.expandvars(command), comments=True)
    if words[:1] == ["moopt"]:
        return words[1:]
    for i in range(len(words) - 1):
        if words[i] == "-m" and words[i + 1] == "moopt" and words[0] in ("python", "torchrun"):
            return words[i + 2:]
    return None


def _with_data(command: str, monkeypatch) -> None:
    if "MOOPT_DATA_DIR" in command:
        if DATA is None:
            pytest.skip("the command uses $MOOPT_DATA_DIR; the real data is not here")
        monkeypatch.setenv("MOOPT_DATA_DIR", str(DATA))


@pytest.mark.parametrize("block, command", COMMANDS,
                         ids=[f"{b}:{c[:40]}" for b, c in COMMANDS])
def test_shell_commands_are_valid(block, command, tmp_path, monkeypatch, capsys):
    from moopt.cli import main

    _with_data(command, monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOOPT_CACHE_DIR", str(tmp_path / "cache"))
    argv = _moopt_argv(command)
    words = shlex.split(os.path.expandvars(command), comments=True)
    if argv is not None:
        if argv[:1] in (["run"], ["compare"]) and "--help" not in argv:
            argv = [*argv, "--dry-run"]
        code = main(argv)
        assert code == 0, capsys.readouterr().err
        assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    elif words[0] == "make":
        proc = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, text=True,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    elif words[:2] == ["python", "-m"]:
        proc = subprocess.run([sys.executable, "-m", words[2], "--help"], cwd=tmp_path,
                              text=True, capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    else:
        pytest.fail(f"{block}: no check for {command!r}; mark the block as a fragment or "
                    "teach this test")


TOML = [b for b in BLOCKS if b.lang == "toml" and not b.fragment]


@pytest.mark.parametrize("block", TOML, ids=_ids(TOML))
def test_toml_blocks_parse(block):
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python >= 3.11")
    data = tomllib.loads(block.code)
    for group in data.get("project", {}).get("entry-points", {}).values():
        for target in group.values():
            assert re.fullmatch(r"[\w.]+:\w+", target), target


@pytest.mark.slow
@pytest.mark.parametrize("block, command", [(b, c) for b, c in COMMANDS if _moopt_argv(c)],
                         ids=[f"{b}:{c[:40]}" for b, c in COMMANDS if _moopt_argv(c)])
def test_moopt_commands_run_for_real_at_a_reduced_size(block, command, tmp_path,
                                                        monkeypatch, capsys):
    from moopt.cli import main

    _with_data(command, monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOOPT_CACHE_DIR", str(tmp_path / "cache"))
    argv = _moopt_argv(command)
    if argv[:1] == ["run"]:
        argv = [*argv, "--steps", "4", "--no-progress"]
    elif argv[:1] == ["compare"]:
        argv = [*argv, "--steps", "4", "--seeds", "0", "--no-progress"]
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    assert code == 0, capsys.readouterr().err
