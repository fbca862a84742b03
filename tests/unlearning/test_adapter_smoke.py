"""The unlearning `smoke` preset end to end on the embedded data (stage 1 included).

Runs in the default suite (about 20 s of CPU with one thread): the issue wants the smoke
preset tested on every change.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch
from moopt.tasks.unlearning.adapter import UnlearningTask
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.presets import PRESETS

from moopt.runner.config import resolve_config
from moopt.runner.run import run_task
from moopt.runner.task import RunContext


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    cfg = resolve_config(UnlearningConfig, preset={**PRESETS["smoke"], "preset": "smoke"},
                         flags={"out": root / "run", "cache_dir": root / "cache",
                                "progress": False, "task": "unlearning"})
    task = UnlearningTask()
    log = io.StringIO()
    with contextlib.redirect_stderr(log):  # not a terminal: one status line per stage
        result = run_task(task, cfg)
    result.extras["stderr"] = log.getvalue()
    return task, cfg, result


def test_unlearning_lowers_forget_probability_and_keeps_utility(smoke):
    _, cfg, result = smoke
    before = result.setup and json.loads(
        (cfg.cache_dir / "unlearning").glob("*/info.json").__next__().read_text())
    target = before["target_metrics"]
    after = result.metrics
    # Stage 1 really taught the facts (otherwise there is nothing to unlearn).
    assert target["forget/probability"] > 0.8 and target["model_utility"] > 0.6
    # Stage 2 unlearned: the forget answers became much less likely ...
    assert after["forget/probability"] < 0.5 * target["forget/probability"]
    assert after["forget/rouge_l"] < target["forget/rouge_l"]
    # ... while utility stayed above a floor.
    assert after["model_utility"] > 0.75 * target["model_utility"]
    assert after["retain/probability"] > 0.8
    assert 0.0 <= after["forget_quality"] <= 1.0


def test_run_directory_and_report(smoke):
    _, cfg, result = smoke
    out = cfg.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["forget/probability"] == result.metrics["forget/probability"]
    for stage in ("finetune_target", "finetune_retain", "train", "evaluate"):
        assert metrics[f"time_{stage}_s"] > 0, stage
    report = (out / "report.md").read_text()
    for text in ("Stage times", "Generated answers on the forget set", "Before unlearning",
                 "forget_quality", "scorer"):
        assert text in report
    assert (out / "losses.png").is_file()
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    forget_steps = [r["step"] for r in history if r.get("objective") == "forget"]
    assert forget_steps[:3] == [1, 7, 13]  # the paper's 1:5 alternation


def reads_as_text(answer: str) -> bool:
    """At least three words, no word three times in a row, mostly distinct words."""
    words = answer.lower().split()
    if len(words) < 3:
        return False
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        return False
    return len(set(words)) >= 0.6 * len(words)


def test_reads_as_text():
    assert reads_as_text("Selen was born in Fennick.")
    assert not reads_as_text("in in in in in in in in in in in in")
    assert not reads_as_text("the the cat the the dog the the")
    assert not reads_as_text("in 1928.")


def test_forget_answers_after_unlearning_read_as_text_and_are_wrong(smoke):
    _, cfg, result = smoke
    answers = result.setup.extras["answers"]["forget"]
    truths = [it.answer for it in _prepared_data(cfg).forget_eval]
    assert len(answers) == len(truths) > 0
    assert all(reads_as_text(a) for a in answers), answers
    assert sum(a == t for a, t in zip(answers, truths)) <= len(truths) // 2, answers


def _prepared_data(cfg):
    from moopt.tasks.unlearning.adapter import load_data

    return load_data(cfg)


def test_every_stage_shows_a_status_line(smoke):
    err = smoke[2].extras["stderr"]
    for line in ("stage 1: fine-tuning the target (",
                 "stage 1: fine-tuning the retain-only model (",
                 "stage 1: evaluating the target (4 sets)", "unlearning: training (120 steps)",
                 "evaluate (4 sets)"):
        assert line in err, err
    assert "Writing model shards" not in err and "Loading weights" not in err


def test_reference_model_stays_frozen(smoke):
    task, cfg, result = smoke
    ref = result.setup.extras["ref_model"]
    target = RunContext(None, cfg.cache_dir)
    target.prepared = task.prepare(cfg, target)  # cached: no fine-tuning again
    assert target.prepared.cached
    original = target.prepared.load_target()
    for a, b in zip(ref.parameters(), original.parameters()):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(result.setup.model.parameters(),
                                                     original.parameters()))
