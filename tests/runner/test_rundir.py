"""Output-directory safety: refuse another run's directory, resume, overwrite."""

from __future__ import annotations

import json

import pytest

from moopt.runner.run import run_task
from moopt.runner.rundir import RunDirError
from tests.runner.toy_task import ToyConfig, ToyTask


def _cfg(out, **kw):
    return ToyConfig(steps=4, lr=0.05, progress=False, out=out, cache_dir=out.parent / "c", **kw)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file()}


def test_refuses_a_directory_holding_another_run(tmp_path):
    out = tmp_path / "run"
    run_task(ToyTask(), _cfg(out), plots=False)
    before = _files(out)
    with pytest.raises(RunDirError, match=r"holds another run \(config differs: lr: 0.05 -> 0.1"):
        run_task(ToyTask(), _cfg(out).model_copy(update={"lr": 0.1}), plots=False)
    with pytest.raises(RunDirError,
                       match=r"holds this run \(status finished at step 4\); pass --resume"):
        run_task(ToyTask(), _cfg(out), plots=False)
    with pytest.raises(RunDirError, match="config differs"):
        run_task(ToyTask(), _cfg(out, seed=5), resume=True, plots=False)
    assert _files(out) == before  # nothing of the old run was touched


def test_overwrite_replaces_every_file(tmp_path):
    out = tmp_path / "run"
    run_task(ToyTask(), _cfg(out, eval_every=1), plots=False)
    (out / "leftover.txt").write_text("from the old run")
    run_task(ToyTask(), _cfg(out, seed=3), overwrite=True, plots=False)
    assert not (out / "leftover.txt").exists()
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if "eval" in r] == [4]  # no eval records of the old run


def test_refuses_a_foreign_non_empty_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for kw in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(RunDirError, match="holds no moopt run"):
            run_task(ToyTask(), _cfg(out), plots=False, **kw)
    assert (out / "notes.txt").read_text() == "keep me"


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    out = tmp_path / "run"
    first = run_task(ToyTask(), _cfg(out), plots=False)
    again = run_task(ToyTask(), _cfg(out), resume=True, plots=False)
    assert again.metrics == first.metrics
