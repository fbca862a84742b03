"""One process per run directory: the lock, stale locks, unique temporary files, torn
history records."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moopt.runner import lock as lockmod
from moopt.runner.atomic import replacing
from moopt.runner.history import History
from moopt.runner.lock import DirLock, DirLockedError, lock_holder
from moopt.runner.run import run_task
from moopt.runner.rundir import read_status
from tests.runner.toy_task import ToyConfig, ToyTask

REPO = Path(__file__).resolve().parents[2]

# A run that takes 6 steps (checkpoints at 2, 4, 6), reports that, then hangs in step 7.
HANGING_RUN = """
import pathlib, sys, time
from moopt.runner.run import run_task
from tests.runner.toy_task import ToyConfig, ToyTask

out, flag = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

class Hanging(ToyTask):
    def build(self, cfg, ctx):
        setup = super().build(cfg, ctx)
        for spec in setup.objectives.values():
            def loss(x, inner=spec.loss):
                calls.append(1)
                if len(calls) == 7:
                    flag.write_text("step 7")
                    while True:
                        time.sleep(0.1)
                return inner(x)
            spec.loss = loss
        return setup

calls = []
run_task(Hanging(), ToyConfig(**__import__("json").loads(sys.argv[3])), plots=False)
"""


def _cfg(out: Path, **kw) -> ToyConfig:
    base = dict(steps=12, lr=0.05, schedule={"a": 1, "b": 2}, checkpoint_every=2,
                eval_every=4, progress=False, out=out, cache_dir=out.parent / "cache")
    base.update(kw)
    return ToyConfig(**base)


def _history(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]


def test_a_live_run_directory_is_refused_and_a_killed_one_resumes(tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(out)
    flag = tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MOOPT_COMPILE": "0"}
    child = subprocess.Popen(
        [sys.executable, "-c", HANGING_RUN, str(out), str(flag), cfg.model_dump_json()],
        env=env, cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child run never reached step 7"
            time.sleep(0.1)
        before = (out / "history.jsonl").read_text()
        assert read_status(out)["status"] == "running"
        assert lock_holder(out)["pid"] == child.pid
        for kw in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(DirLockedError, match=rf"in use by pid {child.pid} on host"):
                run_task(ToyTask(), cfg, plots=False, **kw)
        assert (out / "history.jsonl").read_text() == before  # nothing appended or deleted
        assert (out / "config.json").is_file()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    # The dead process's lock is gone with it; its status shows what happened.
    assert lock_holder(out) is None
    assert read_status(out)["status"] == "interrupted"
    assert json.loads((out / "run.json").read_text())["step"] == 6  # its last checkpoint
    resumed = run_task(ToyTask(), cfg, resume=True, plots=False)
    full = run_task(ToyTask(), _cfg(tmp_path / "full"), plots=False)
    assert resumed.metrics == full.metrics
    assert _history(out) == _history(tmp_path / "full")  # no step twice, none missing


def test_lock_is_exclusive_and_released(tmp_path):
    with DirLock(tmp_path) as held:
        assert held.held
        with pytest.raises(DirLockedError, match=rf"in use by pid {os.getpid()}"):
            DirLock(tmp_path).acquire()
    assert lock_holder(tmp_path) is None
    DirLock(tmp_path).acquire().release()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_without_flock_a_pid_file_locks_and_stale_ones_are_taken_over(tmp_path, monkeypatch):
    monkeypatch.setattr(lockmod, "fcntl", None)
    first = DirLock(tmp_path).acquire()
    with pytest.raises(DirLockedError, match=rf"pid {os.getpid()}"):
        DirLock(tmp_path).acquire()
    assert lock_holder(tmp_path)["pid"] == os.getpid()
    first.release()
    assert not (tmp_path / lockmod.LOCK_NAME).exists()
    stale = {"pid": _dead_pid(), "host": socket.gethostname(), "since": 0.0}
    (tmp_path / lockmod.LOCK_NAME).write_text(json.dumps(stale))
    assert lock_holder(tmp_path) is None
    DirLock(tmp_path).acquire().release()
    other_host = {**stale, "host": "elsewhere"}
    (tmp_path / lockmod.LOCK_NAME).write_text(json.dumps(other_host))
    with pytest.raises(DirLockedError, match="host 'elsewhere'"):
        DirLock(tmp_path).acquire()


def test_two_writers_of_one_file_use_their_own_temporary_files(tmp_path):
    target = tmp_path / "run.json"
    with replacing(target) as first:
        first.write("first")
        with replacing(target) as second:
            second.write("second")
        assert target.read_text() == "second"
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
    with pytest.raises(RuntimeError), replacing(target) as f:
        f.write("half")
        raise RuntimeError
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_torn_last_history_record_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run"
    run_task(ToyTask(), _cfg(out), stop_after=5, plots=False)  # checkpoint at 4, records to 5
    with (out / "history.jsonl").open("a") as f:
        f.write('{"step": 6, "objective": "a", "lo')  # killed while writing step 6
    assert History(out / "history.jsonl").torn.startswith('{"step": 6')
    run_task(ToyTask(), _cfg(out), resume=True, plots=False)
    run_task(ToyTask(), _cfg(tmp_path / "full"), plots=False)
    assert _history(out) == _history(tmp_path / "full")


def test_a_broken_record_inside_the_history_is_an_error(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"step": 1, "objective": "a", "loss": 1.0}\n{"step": 2, "obj\n'
                    '{"step": 3, "objective": "a", "loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"history\.jsonl:2: broken history record"):
        History(path)
    path.write_text('{"objective": "a"}\n')
    with pytest.raises(ValueError, match=r"history\.jsonl:1: .* integer 'step'"):
        History(path)
