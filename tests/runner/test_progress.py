"""Progress of long stages: a bar on a terminal, one status line per stage otherwise."""

from __future__ import annotations

import io

from moopt.runner.progress import eta_text, stage_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_one_line_per_stage_without_a_terminal():
    log = io.StringIO()
    with stage_progress("stage 1: fine-tuning", 300, stream=log) as bar:
        for _ in range(300):
            bar.update()
        bar.set_postfix({"loss": "0.1"})
    assert log.getvalue() == "stage 1: fine-tuning (300 steps)\n"
    log = io.StringIO()
    with stage_progress("evaluate", 1, unit="set", stream=log, bar=False):
        pass
    assert log.getvalue() == "evaluate (1 set)\n"


def test_a_bar_on_a_terminal_and_nothing_when_disabled():
    term = _Terminal()
    with stage_progress("train", 5, stream=term) as bar:
        for _ in range(5):
            bar.update()
    out = term.getvalue()
    assert "train:" in out and "0/5" in out and "(5 steps)\n" not in out  # a tqdm bar
    term = _Terminal()
    with stage_progress("train", 5, stream=term, bar=False):  # --no-progress: the line only
        pass
    assert term.getvalue() == "train (5 steps)\n"
    log = io.StringIO()
    with stage_progress("train", 5, stream=log, enabled=False) as bar:  # rank > 0
        bar.update()
    assert log.getvalue() == ""


def test_eta():
    assert eta_text(0, 10, 5.0) == "5 s so far"
    assert eta_text(2, 10, 80.0) == "80 s so far, about 5 min left"
    assert eta_text(10, 10, 7200.0) == "2.0 h so far"


def test_run_and_compare_show_their_stages(tmp_path, capsys):
    from moopt.cli import main

    toy = "tests.runner.toy_task:ToyTask"
    assert main(["run", toy, "--steps", "5", "--out", str(tmp_path / "r"), "--no-plots"]) == 0
    assert "toy: training (5 steps)\n" in capsys.readouterr().err
    assert main(["compare", toy, "--policies", "shared", "--lrs", "0.01,0.02", "--seeds", "0",
                 "--steps", "3", "--out", str(tmp_path / "c"), "--no-plots"]) == 0
    out, err = capsys.readouterr()
    assert "[1/2] shared-fp32-lr0.01-s0 (0 s so far)" in out
    assert "[2/2] shared-fp32-lr0.02-s0 (" in out and "left)" in out
    assert err.count("toy: training (3 steps)\n") == 2
