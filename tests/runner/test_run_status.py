"""What a run directory says about its run: status on every kind of exit, reports and stage
times that survive resumption, checks that come before the directory is created, and the
reuse of a directory whose run never took a step."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from moopt.cli import main
from moopt.errors import MooptError
from moopt.runner.run import RunStopped, make_context, run_task
from moopt.runner.rundir import RunDirError
from tests.runner.toy_task import ToyConfig, ToyTask


def _cfg(out: Path, **kw) -> ToyConfig:
    base = dict(steps=12, lr=0.05, schedule={"a": 1, "b": 2}, checkpoint_every=2,
                eval_every=4, progress=False, out=out, cache_dir=out.parent / "cache")
    base.update(kw)
    return ToyConfig(**base)


def _status(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


class Failing(ToyTask):
    """The toy task whose objective ``a`` raises ``error`` in its ``at``-th loss call."""

    def __init__(self, error: BaseException | None, at: int) -> None:
        super().__init__()
        self.error, self.at, self.calls = error, at, 0

    def build(self, cfg, ctx):
        setup = super().build(cfg, ctx)
        spec = setup.objectives["a"]

        def loss(x, inner=spec.loss):
            self.calls += 1
            if self.calls == self.at:
                if self.error is None:
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    raise self.error
            return inner(x)

        spec.loss = loss
        return setup


class StagedToy(ToyTask):
    """The toy task with a cached first stage that takes time only when the cache is empty
    (like the LLM tasks' stage 1)."""

    def prepare(self, cfg, ctx):
        done = Path(ctx.cache_dir) / "stage1"
        if not done.exists():
            with ctx.stage("stage1"):
                done.parent.mkdir(parents=True, exist_ok=True)
                done.write_text("done")
        return super().prepare(cfg, ctx)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm", "error"])
def test_status_on_each_kind_of_exit_and_resume_after_it(tmp_path, how):
    out = tmp_path / "run"
    error = {"ctrl-c": KeyboardInterrupt(), "sigterm": None,
             "error": RuntimeError("boom")}[how]
    expected = {"ctrl-c": KeyboardInterrupt, "sigterm": RunStopped, "error": RuntimeError}[how]
    with pytest.raises(expected):
        run_task(Failing(error, at=3), _cfg(out), plots=False)  # a's 3rd step is step 7
    status = _status(out)
    assert status["status"] == ("failed" if how == "error" else "stopped")
    assert status["step"] == 6  # the checkpoint a resume continues from
    assert status["timings"]["train"] > 0
    if how == "error":
        assert status["error"] == "RuntimeError: boom"
    elif how == "sigterm":
        assert status["reason"] == "stopped by signal SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed
    resumed = run_task(ToyTask(), _cfg(out), resume=True, plots=False)
    full = run_task(ToyTask(), _cfg(tmp_path / "full"), plots=False)
    assert resumed.metrics == full.metrics and _status(out)["status"] == "finished"


def test_sigterm_through_the_command_line_exits_143(tmp_path, capsys, monkeypatch):
    import tests.runner.toy_task as toy

    monkeypatch.setattr(toy, "SigtermToy", type("SigtermToy", (Failing,), {
        "__init__": lambda self: Failing.__init__(self, None, 2)}), raising=False)
    code = main(["run", "tests.runner.toy_task:SigtermToy", "--out", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-plots"])
    assert code == 143
    assert "stopped by signal SIGTERM; continue with --resume" in capsys.readouterr().err
    assert _status(tmp_path / "run")["status"] == "stopped"


def _without_times(text: str) -> list[str]:
    timing = re.compile(r"^\| (time_\w+_s|prepare|build|train|evaluate|stage1) \| ")
    return [line for line in text.splitlines()
            if not timing.match(line) and '"out":' not in line and '"cache_dir":' not in line]


def test_resumed_report_equals_the_uninterrupted_one_and_times_add_up(tmp_path):
    full = run_task(StagedToy(), _cfg(tmp_path / "full", cache_dir=tmp_path / "c1"),
                    plots=False)
    out = tmp_path / "split"
    cfg = _cfg(out, cache_dir=tmp_path / "c2")
    run_task(StagedToy(), cfg, stop_after=5, plots=False)
    first = _status(out)["timings"]
    assert "stage1" in first
    second = make_context(cfg, out)
    resumed = run_task(StagedToy(), cfg, resume=True, plots=False, ctx=second)
    assert "stage1" not in second.timings  # the cache was warm the second time
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("stage1", "prepare", "build", "train", "evaluate"):
        want = first.get(stage, 0.0) + second.timings.get(stage, 0.0)
        assert metrics[f"time_{stage}_s"] == pytest.approx(want, rel=1e-12, abs=1e-12), stage
        assert resumed.timings[stage] == pytest.approx(want, rel=1e-12, abs=1e-12)
    assert _status(out)["timings"] == resumed.timings
    full_metrics = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert sorted(metrics) == sorted(full_metrics)
    assert {k: v for k, v in metrics.items() if not k.startswith("time_")} == \
        {k: v for k, v in full_metrics.items() if not k.startswith("time_")}
    report = (out / "report.md").read_text()
    assert "| stage1 |" in report and "| time_stage1_s |" in report
    assert _without_times(report) == _without_times((tmp_path / "full" / "report.md").read_text())
    assert full.metrics == resumed.metrics


BAD = {
    "lr_ratios": {"lr_ratios": {"zz": 2.0}},
    "weights": {"schedule": "joint", "weights": {"zz": 1.0}},
    "schedule": {"schedule": {"a": 1, "zz": 1}},
    "policy": {"policy": "nosuch"},
    "storage": {"storage": "nosuch"},
    "storage role": {"storage": {"basse": "int8"}},
    "optimizer option": {"optimizer_options": {"bridge_gaurd": 1.0}},
    "data_dir": {"data_dir": "/no/such/data"},
    "model": {"model": "/no/such/model"},
    "clipping in joint mode": {"schedule": "joint", "max_grad_norm": 1.0},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_names_and_paths_create_no_run_directory(tmp_path, case):
    out = tmp_path / "run"
    with pytest.raises((MooptError, ValueError, TypeError)) as err:
        run_task(ToyTask(), _cfg(out, **BAD[case]), plots=False)
    assert any(word in str(err.value) for word in ("zz", "nosuch", "basse", "gaurd",
                                                   "/no/such", "max_grad_norm")), err.value
    assert not out.exists()


def test_a_directory_whose_run_failed_before_its_first_step_is_reused(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="shape"):
        run_task(Failing(RuntimeError("shape mismatch"), at=1), _cfg(out), plots=False)
    assert _status(out)["status"] == "failed" and (out / "history.jsonl").is_file()
    # The same config again, then another one: no --resume or --overwrite needed.
    with pytest.raises(RuntimeError, match="again"):
        run_task(Failing(RuntimeError("again"), at=1), _cfg(out), plots=False)
    res = run_task(ToyTask(), _cfg(out, seed=3), plots=False)
    assert res.train.step == 12 and _status(out)["status"] == "finished"
    assert json.loads((out / "config.json").read_text())["seed"] == 3
    # A run that took steps is not reused silently.
    with pytest.raises(RunDirError, match="holds another run"):
        run_task(ToyTask(), _cfg(out, seed=4), plots=False)
