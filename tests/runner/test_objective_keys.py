"""Objective names in ``schedule``, ``weights`` and ``lr_ratios`` are checked before anything
runs for every task whose config tells its objectives, and the declared names are the ones
the task builds."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from moopt.cli import main
from moopt.runner import RunConfig
from moopt.runner.config import ConfigError
from moopt.runner.discovery import get_task
from moopt.runner.objective_keys import check_objective_keys
from moopt.runner.run import check_declared_objectives, run_task
from tests.runner.toy_task import ToyTask

# Each built-in task with its default preset; the names its config declares.
TASKS = {"unlearning": ["forget", "retain"], "safety": ["safety", "utility", "no_overrefusal"],
         "multitask-vision": ["left", "right"]}


def _dry_run(capsys, task: str, *argv: str) -> tuple[int, str, str]:
    code = main(["run", task, "--dry-run", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("task, names", TASKS.items())
def test_declared_names_follow_the_config(task, names, capsys):
    code, out, err = _dry_run(capsys, task)
    assert code == 0, err
    cfg = get_task(task).config_class.model_validate(json.loads(out[out.index("{"):]))
    assert get_task(task).objective_names(cfg) == names


@pytest.mark.parametrize("task, names", TASKS.items())
@pytest.mark.parametrize("key", ["schedule", "weights", "lr_ratios"])
def test_a_misspelt_objective_fails_the_dry_run(task, names, key, capsys, tmp_path):
    value = {names[0] + "x": 1, **{n: 1 for n in names[1:]}}
    out_dir = tmp_path / "out"
    code, out, err = _dry_run(capsys, task, "--out", str(out_dir),
                              "--set", f"{key}={json.dumps(value)}")
    assert code == 2 and "dry run" not in out
    assert f"'{key}'" in err and repr(names[0] + "x") in err, err
    assert not out_dir.exists()


def test_a_compare_grid_is_checked_too(capsys, tmp_path):
    code = main(["compare", "safety", "--dry-run", "--set", 'schedule={"safty": 1, "utility": 1}'])
    assert code == 2 and "'safty'" in capsys.readouterr().err


def test_the_right_names_pass(capsys):
    for task, names in TASKS.items():
        weights = json.dumps({n: 1.0 for n in names})
        code, _, err = _dry_run(capsys, task, "--set", f"weights={weights}")
        assert code == 0, err


def test_multitask_tasks_option_names_the_objectives():
    task = get_task("multitask-vision")
    cfg = task.config_class(dataset="multimnist3")
    assert task.objective_names(cfg) == ["left", "right", "larger"]
    assert task.objective_names(task.config_class(tasks=["right"])) == ["right"]
    assert task.objective_names(task.config_class(dataset="celeba")) is None


def test_check_objective_keys_accepts_round_robin_and_joint():
    for schedule in (None, "round_robin", "joint"):
        check_objective_keys(RunConfig(schedule=schedule), ["a", "b"])
    with pytest.raises(ConfigError, match=r"missing: \['b'\]"):
        check_objective_keys(RunConfig(schedule={"a": 1}), ["a", "b"])


class _Misdeclared(ToyTask):
    def objective_names(self, cfg):
        return ["a", "c"]


def test_a_task_that_builds_other_objectives_than_it_declares_is_named(tmp_path: Path):
    cfg = _Misdeclared.config_class(steps=1, out=tmp_path / "r", progress=False)
    with pytest.raises(TypeError, match=r"objective_names\(\) gave \['a', 'c'\].*\['a', 'b'\]"):
        run_task(_Misdeclared(), cfg)
    setup = SimpleNamespace(objectives={"a": None, "b": None})
    check_declared_objectives(ToyTask(), cfg, setup)  # None: nothing declared, nothing to check
