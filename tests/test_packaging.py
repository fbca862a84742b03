"""The built wheel, installed into a fresh virtual environment, works from any directory.

Offline: the wheel is built from this checkout with the setuptools already installed (no
build isolation, no download); the fresh environment gets moopt from the wheel only
(``--no-deps --no-index``) and its dependencies (torch, pydantic, transformers...) from the
environment running the tests, through a ``.pth`` file. A ``tasks.py`` in the working
directory (common with invoke) must change nothing: the task adapters install as
``moopt.tasks``, and the distribution claims no other top-level name.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIN_SETUPTOOLS = (77,)  # SPDX license expressions (pyproject's license = "MIT")


def _version_tuple(text: str) -> tuple[int, ...]:
    out = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def _newest_setuptools_dir() -> Path | None:
    """The site directory of the newest installed setuptools that can build this project
    (a virtual environment may hold an old one in front of a newer one)."""
    found = [(_version_tuple(d.version), Path(d.locate_file("")))
             for d in md.distributions(name="setuptools")]
    good = sorted((v, p) for v, p in found if v >= MIN_SETUPTOOLS)
    return good[-1][1] if good else None


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, text=True, capture_output=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    backend_dir = _newest_setuptools_dir()
    if backend_dir is None:
        pytest.skip("building the wheel offline needs setuptools >= 77 installed "
                    "(pip install 'setuptools>=77'; the 'test' extra lists it)")
    out = tmp_path_factory.mktemp("dist")
    build = tmp_path_factory.mktemp("build")
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.build_wheel(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": str(backend_dir)}
    # A copy of the sources (tracked and not ignored files): building writes build/ and
    # *.egg-info next to them, which must not land in the checkout.
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, check=True)
    for rel in filter(None, files.stdout.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            dst = build / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    name = _run([sys.executable, "-c", code, str(out)], cwd=build, env=env).stdout.split()[-1]
    return out / name


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"moopt", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}
    assert "moopt/tasks/unlearning/adapter.py" in names
    assert "moopt/states/fast/native.c" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA")))
    assert b"License-Expression: MIT" in meta
    assert any(n.endswith("licenses/LICENSE") for n in names)


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> Path:
    env_dir = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    py = env_dir / "bin" / "python"
    purelib = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
                        ).stdout.strip())
    # Dependencies come from the environment running the tests (offline), after the fresh
    # environment's own site-packages, so moopt itself is only ever the wheel's.
    here = [p for p in [*site.getsitepackages(), sysconfig.get_path("purelib"), *sys.path]
            if p and Path(p).is_dir() and "site-packages" in p]
    (purelib / "_test_deps.pth").write_text("\n".join(dict.fromkeys(here)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps",
          "--no-index", "--no-cache-dir", "-q", str(wheel)])
    return env_dir


@pytest.fixture
def workdir_with_tasks_py(tmp_path) -> Path:
    (tmp_path / "tasks.py").write_text(
        'raise RuntimeError("the working directory\'s tasks.py was imported")\n')
    return tmp_path


def test_installed_wheel_runs_from_a_directory_with_tasks_py(fresh_env, workdir_with_tasks_py):
    cwd = workdir_with_tasks_py
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOOPT_DEBUG")}
    where = _run([str(fresh_env / "bin" / "python"), "-c",
                  "import moopt, moopt.tasks; print(moopt.__file__)"], cwd=cwd, env=env)
    assert str(fresh_env) in where.stdout  # the wheel's moopt, not this checkout
    listed = _run([str(fresh_env / "bin" / "moopt"), "list"], cwd=cwd, env=env).stdout
    for task in ("unlearning", "safety", "multitask-vision"):
        line = next(x for x in listed.splitlines() if x.strip().startswith(task))
        assert "unavailable" not in line, line
    helped = _run([str(fresh_env / "bin" / "python"), "-m", "moopt", "run", "unlearning",
                   "--help"], cwd=cwd, env=env).stdout
    assert "options of task 'unlearning'" in helped and "--task-id" in helped
