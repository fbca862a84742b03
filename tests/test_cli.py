"""The moopt command line on the toy task of tests/runner (and `python -m moopt`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moopt.cli import main, parse_storage, task_options
from tests.runner.toy_task import ToyConfig

TOY = "tests.runner.toy_task:ToyTask"


def test_run_with_flags_task_options_and_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", TOY, "--preset", "tiny", "--policy", "decoupled", "--lr", "0.02",
                 "--steps", "5", "--out", str(out), "--cache-dir", str(tmp_path / "c"),
                 "--dropout", "0.0", "--n-batches=3", "--set", "lr_ratios.a=2", "--no-plots"])
    assert code == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["policy"], cfg["lr"], cfg["steps"], cfg["dropout"], cfg["n_batches"]) == (
        "decoupled", 0.02, 5, 0.0, 3)
    assert cfg["lr_ratios"] == {"a": 2.0} and cfg["preset"] == "tiny" and cfg["task"] == "toy"
    assert cfg["schedule"] == {"a": 1, "b": 2}  # from the preset
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"mse_a", "mse_b"}
    assert "run finished" in capsys.readouterr().out
    # Same directory, different config: refused with exit status 2 and the differing key.
    code = main(["run", TOY, "--lr", "0.03", "--steps", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "holds another run" in err and "lr: 0.02 -> 0.03" in err


def test_errors_are_clear(tmp_path, capsys):
    assert main(["run", "no-such-task", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'no-such-task'; known tasks:" in err and "unlearning" in err
    assert main(["run", TOY, "--preset", "huge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'huge' of task 'toy'; presets: tiny" in capsys.readouterr().err
    assert main(["run", TOY, "--dropuot", "0.1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown option --dropuot" in err and "--dropout" in err
    assert main(["run", TOY, "--set", "lrr=1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown config key 'lrr' (did you mean 'lr'?)" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing written on a config error


def test_compare_writes_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", TOY, "--policies", "shared,bridged", "--lrs", "0.01,0.05",
                 "--seeds", "0", "--steps", "4", "--out", str(out), "--cache-dir",
                 str(tmp_path / "c"), "--no-plots"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert sorted({r["group"] for r in results["runs"]}) == ["bridged-fp32", "shared-fp32"]
    assert "bridged-fp32 lr=0.05" in capsys.readouterr().out


def test_helpers():
    assert parse_storage("int8") == "int8"
    assert parse_storage("base=fp32,delta=int8") == {"base": "fp32", "delta": "int8"}
    assert task_options(["--dropout", "0.5", "--n-batches=2"], ToyConfig, "toy") == {
        "dropout": 0.5, "n_batches": 2}


def test_python_dash_m_lists_tasks_policies_objectives():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "moopt", "list"], cwd=root, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for word in ("tasks:", "unlearning", "policies: ", "bridged", "storages: ", "fp32",
                 "npo"):
        assert word in proc.stdout


@pytest.mark.parametrize("argv", [["run"], ["compare", TOY]])
def test_argument_errors_exit_with_usage(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv) if argv[0] == "run" else main(argv + ["--steps", "x"])
    assert exc.value.code == 2


# ---- values by field type, presets' requirements, errors in the user's terms ----------------


def _dry_run(capsys, *argv: str) -> dict:
    code = main(["run", *argv, "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out[out.index("{"):out.rindex("}") + 1])


def test_a_string_option_takes_a_number_as_text(capsys):
    cfg = _dry_run(capsys, "unlearning", "--task-id", "2")
    assert cfg["task_id"] == "2"
    assert _dry_run(capsys, "unlearning", "--set", "task_id=3")["task_id"] == "3"
    assert _dry_run(capsys, "unlearning", "--task-id", "null")["task_id"] is None
    # Numbers still reach number fields as numbers, JSON still reaches dict fields.
    cfg = _dry_run(capsys, "unlearning", "--batch-size", "4", "--set", "lr_ratios.forget=2")
    assert cfg["batch_size"] == 4 and cfg["lr_ratios"]["forget"] == 2.0


def test_dry_run_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    cfg = _dry_run(capsys, TOY, "--out", str(out), "--cache-dir", str(tmp_path / "c"))
    assert cfg["out"] == str(out) and not out.exists() and not (tmp_path / "c").exists()
    assert main(["compare", TOY, "--dry-run"]) == 0
    assert "grid: 8 runs" in capsys.readouterr().out  # 2 registered configs x 2 lrs x 2 seeds


@pytest.mark.parametrize("task, preset", [("unlearning", "tofu"),
                                          ("multitask-vision", "celeba")])
def test_a_preset_refuses_to_run_without_what_it_needs(task, preset, tmp_path, capsys):
    for command in ("run", "compare"):
        code = main([command, task, "--preset", preset, "--out", str(tmp_path / "o"),
                     "--cache-dir", str(tmp_path / "c"), "--no-progress"])
        assert code == 2
        assert f"preset '{preset}' needs --data-dir" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()


def test_epochs_on_the_command_line_replaces_the_presets_steps(capsys):
    cfg = _dry_run(capsys, "unlearning", "--set", "epochs=1")
    assert (cfg["steps"], cfg["epochs"]) == (None, 1.0)
    cfg = _dry_run(capsys, "unlearning", "--epochs", "2", "--steps", "5", "--set", "steps=7")
    assert (cfg["steps"], cfg["epochs"]) == (7, None)


BAD_VALUES = [
    (["--set", "schedule=foo"], "config key 'schedule': expected a mapping of name to integer, "
                                "'round_robin', 'joint' or null, got foo"),
    (["--set", 'schedule={"a": "x"}'], "config key 'schedule': expected"),
    (["--set", "betas=1"], "config key 'betas': expected a list of 2 numbers, got 1"),
    (["--set", "betas=[1, 2]"], "config key 'betas': each beta must be in [0, 1), got 1.0"),
    (["--lr", "-1"], "config key 'lr': must be greater than 0, got -1.0"),
    (["--n-batches", "x"], "config key 'n_batches': expected an integer, got x"),
    (["--set", 'storage={"base": 1}'], "config key 'storage': expected a string or a mapping "
                                       "of name to string, got {\"base\": 1}"),
    (["--set", "optimizer_options=3"], "config key 'optimizer_options': expected a mapping"),
    (["--set", "steps=3", "--set", "epochs=1"], "set either steps (3) or epochs (1.0), not both"),
]


@pytest.mark.parametrize("argv, expected", BAD_VALUES)
def test_bad_values_are_one_line_in_the_users_terms(argv, expected, tmp_path, capsys):
    assert main(["run", TOY, "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1 and err.startswith("moopt: error: ")
    for internal in ("dict[str", "literal[", "Value error", "<lambda>", "Input should"):
        assert internal not in err


@pytest.mark.parametrize("flag, text, expected", [
    ("--seeds", "a", "'a': expected integers separated by commas"),
    ("--lrs", "x", "'x': expected numbers separated by commas"),
    ("--storages", "base=", "expected NAME or role=NAME"),
])
def test_list_flags_name_what_they_expect(flag, text, expected, capsys):
    with pytest.raises(SystemExit):
        main(["compare", TOY, flag, text])
    err = capsys.readouterr().err
    assert expected in err and "<lambda>" not in err


def test_yaml_error_is_one_line(tmp_path, capsys):
    pytest.importorskip("yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1,\n  2\nfoo: : :\n")
    assert main(["run", TOY, "--config", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml: cannot parse config: line 3, column 4" in err


@pytest.mark.parametrize("flag", ["--cache-dir", "--out"])
def test_a_directory_option_pointing_at_a_file(flag, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    other = "--out" if flag == "--cache-dir" else "--cache-dir"
    for path, words in ((afile, "is a file"), (afile / "sub", "is below the file")):
        code = main(["run", TOY, flag, str(path), other, str(tmp_path / "d"), "--no-plots"])
        err = capsys.readouterr().err
        assert code == 2 and f"{flag} '{path}' {words}" in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_task_module_in_the_working_directory(tmp_path, monkeypatch):
    from moopt.runner.discovery import get_task_class

    (tmp_path / "fh_cwd_task.py").write_text(
        "from moopt.runner import TaskAdapter\nclass Mine(TaskAdapter):\n    name = 'mine'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    assert get_task_class("fh_cwd_task:Mine").name == "mine"
    assert sys.path == before


# ---- help, version, pipes -------------------------------------------------------------------


def _registered_tasks() -> list[str]:
    from moopt.runner.discovery import list_tasks

    return list_tasks()


@pytest.mark.parametrize("command", ["run", "compare"])
@pytest.mark.parametrize("task", _registered_tasks() + [TOY])
def test_task_help_lists_every_option_with_default_and_description(task, command, capsys):
    from moopt.cli_help import OWN_FLAG_FIELDS
    from moopt.runner.discovery import get_task_class
    from moopt.runner.fieldtypes import metavar

    assert main([command, task, "--help"]) == 0
    out = capsys.readouterr().out
    packed = "".join(out.split())  # argparse wraps lines (also at hyphens)
    cls = get_task_class(task)
    for name, field in cls.config_class.model_fields.items():
        if name in OWN_FLAG_FIELDS:
            continue
        flag = "--" + name.replace("_", "-")
        assert f" {flag} " in out
        entry = packed[packed.index(flag + metavar(field.annotation)):][:400]
        assert "default:" in entry
        if field.description:
            assert "".join(field.description.split()) in entry
    assert f"options of task {cls.name!r}" in out


@pytest.mark.parametrize("task", _registered_tasks())
def test_every_option_of_a_registered_task_has_a_description(task):
    from moopt.runner.discovery import get_task_class

    fields = get_task_class(task).config_class.model_fields
    assert [k for k, f in fields.items() if not f.description] == []


def test_task_help_shows_preset_values_and_requirements(capsys):
    assert main(["run", "unlearning", "--preset", "tofu", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "preset 'tofu' needs --data-dir" in text
    assert ("--max-new-tokens INT longest generated answer (tokens) (an integer; preset tofu: "
            "24; class default: 16)") in text
    assert "tofu (needs --data-dir)" in text


def test_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"moopt {version('moopt')}"


def test_closed_pipe_exits_quietly():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(f"{sys.executable} -m moopt list | head -1", shell=True, cwd=root,
                          text=True, capture_output=True, timeout=120)
    assert proc.stdout == "tasks:\n"
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr


def test_one_seed_shows_no_spread():
    from moopt.runner.spread import mean_and_spread

    assert mean_and_spread({"m_mean": 0.5, "m_std": 0.0, "n": 1}, "m") == "0.5 (n=1)"
    assert mean_and_spread({"m_mean": 0.5, "m_std": 0.25, "n": 3}, "m") == "0.5±0.25"


def test_one_seed_comparison_report_shows_no_spread(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", TOY, "--policies", "shared", "--lrs", "0.01", "--seeds", "0",
                 "--steps", "2", "--out", str(out), "--no-plots"])
    assert code == 0, capsys.readouterr().err
    report = (out / "report.md").read_text()
    assert "± 0" not in report and "±" not in report.split("## All metrics")[1].split("##")[0]
    assert "(n=1)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (["--policy", "nope"], "unknown sharing policy 'nope'; known: "),
    (["--storage", "int9"], "unknown storage backend 'int9'"),
    (["--storage", "base=int8,foo=fp32"], "storage role 'foo' is not a state role"),
    (["--set", "optimizer_options.bridg_guard=1"], "unknown option(s) ['bridg_guard']; the "
                                                   "optimizer takes "),
    (["--set", "optimizer_options.lr=1"], "sets ['lr']: set them as config keys"),
])
def test_optimizer_settings_fail_before_any_work(argv, expected, tmp_path, capsys):
    """A typo in the policy, storage or optimizer options is found by --dry-run and before a
    run starts (it used to surface after stage 1, minutes later)."""
    assert main(["run", "unlearning", *argv, "--dry-run"]) == 2
    assert expected in capsys.readouterr().err
    assert main(["run", TOY, *argv, "--out", str(tmp_path / "o")]) == 2
    assert expected in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_resume_and_overwrite_need_an_output_directory(flag, tmp_path, monkeypatch, capsys):
    """Without --out a run gets a new timestamped directory: there is nothing to resume (it
    used to start a whole new run)."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", TOY, flag]) == 2
    assert f"{flag} needs --out DIR" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
