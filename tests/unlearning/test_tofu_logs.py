"""TOFU-format eval logs and ``moopt tofu-score``: the run writes TOFU's four files, the
aggregation gives back the run's metrics, hand-made logs give hand-computed figures, and
bad folders give one-line errors naming the file and key."""

from __future__ import annotations

import json
import math

import pytest
from moopt.tasks.unlearning.adapter import UnlearningTask
from moopt.tasks.unlearning.config import UnlearningConfig
from moopt.tasks.unlearning.presets import PRESETS
from moopt.tasks.unlearning.tofu_logs import LOG_FILES

from moopt.cli import main
from moopt.runner.config import resolve_config
from moopt.runner.run import run_task

pytest.importorskip("transformers", reason="the runs build tiny LMs: moopt[llm]")

TINY = {**PRESETS["smoke"], "n_people": 4, "facts_per_person": 2, "n_utility": 4,
        "finetune_epochs": 2.0, "steps": 4, "eval_every": 1, "checkpoint_every": 1,
        "max_new_tokens": 4}
KEYS = ["avg_gt_loss", "gt_loss", "num_token_gt", "generated_text", "rouge1_recall",
        "rougeL_recall", "average_perturb_loss", "avg_paraphrased_loss", "truth_ratio",
        "paraphrased_loss", "perturb_loss", "num_token_paraphrased", "num_token_perturb"]
LN2, LN4, LN8 = math.log(2), math.log(4), math.log(8)


def _score(capsys, *args):
    code = main(["tofu-score", *map(str, args), "--json"])
    out = capsys.readouterr()
    return code, (json.loads(out.out) if code == 0 else out.err)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("logs")
    cfg = resolve_config(UnlearningConfig, preset=TINY, flags={
        "out": root / "run", "cache_dir": root / "cache", "progress": False})
    run_task(UnlearningTask(), cfg, plots=False)
    return root


def test_run_writes_tofu_logs_per_evaluation(tiny_run):
    logs = tiny_run / "run" / "tofu_logs"
    folders = sorted(p.name for p in logs.iterdir() if p.is_dir())
    assert folders == ["retain_model", "step_1", "step_2", "step_3", "step_4", "target"]
    for folder in [logs, *[logs / f for f in folders]]:
        assert sorted(p.name for p in folder.glob("*.json")) == sorted(LOG_FILES.values())
    n_items = {"retain": 4, "forget": 4, "real_authors": 4, "world_facts": 4}
    for name, file in LOG_FILES.items():
        log = json.loads((logs / file).read_text())
        extra = ["normalized_gt_loss"] if name in ("real_authors", "world_facts") else []
        assert list(log) == KEYS + extra
        for key in log:
            assert list(log[key]) == [str(i) for i in range(n_items[name])], (file, key)
        prompt, generated, truth = log["generated_text"]["0"]
        assert prompt.startswith("Question: ") and prompt.endswith("\nAnswer:")
        assert isinstance(generated, str) and truth
        # Per-token means are the sums over the counts, as TOFU computes them.
        assert log["avg_gt_loss"]["1"] == pytest.approx(
            log["gt_loss"]["1"] / log["num_token_gt"]["1"], rel=1e-12)
        pert = log["average_perturb_loss"]["0"]
        assert pert == pytest.approx([s / n for s, n in zip(log["perturb_loss"]["0"],
                                                             log["num_token_perturb"]["0"])])
        # TOFU logs exp(L_base - mean L_pert) as "truth_ratio".
        assert log["truth_ratio"]["0"] == pytest.approx(
            math.exp(log["avg_paraphrased_loss"]["0"] - sum(pert) / len(pert)), rel=1e-12)
    # The final evaluation is both the folder's root and the last step's folder.
    for file in LOG_FILES.values():
        assert (logs / file).read_bytes() == (logs / "step_4" / file).read_bytes()


def test_tofu_score_reproduces_the_run_metrics(tiny_run, capsys):
    run = tiny_run / "run"
    logs = run / "tofu_logs"
    metrics = json.loads((run / "metrics.json").read_text())
    code, got = _score(capsys, logs, "--retain-logs", logs / "retain_model")
    assert code == 0
    for key in ("model_utility", "forget_quality", "forget/truth_ratio", "retain/probability",
                "real_authors/probability", "world_facts/rouge_l"):
        assert got[key] == metrics[key], key
    # Each step's folder reproduces that step's evaluation in the history.
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    evals = {row["step"]: row["eval"] for row in history if "eval" in row}
    code, step2 = _score(capsys, logs / "step_2", "--retain-logs", logs / "retain_model")
    assert step2["model_utility"] == evals[2]["model_utility"]
    assert step2["forget_quality"] == evals[2]["forget_quality"]
    # Without retain logs there is no forget quality, and the text output is readable.
    code, alone = _score(capsys, logs)
    assert alone["forget_quality"] is None and alone["model_utility"] == metrics["model_utility"]
    assert main(["tofu-score", str(logs)]) == 0
    assert "model_utility" in capsys.readouterr().out


def test_resumed_run_names_step_folders_as_an_uninterrupted_one(tiny_run, tmp_path):
    cfg = resolve_config(UnlearningConfig, preset=TINY, flags={
        "out": tmp_path / "run", "cache_dir": tiny_run / "cache", "progress": False})
    run_task(UnlearningTask(), cfg, plots=False, stop_after=2)
    logs = tmp_path / "run" / "tofu_logs"
    assert sorted(p.name for p in logs.glob("step_*")) == ["step_1", "step_2"]
    assert not (logs / LOG_FILES["forget"]).exists()  # no final evaluation yet
    run_task(UnlearningTask(), cfg, plots=False, resume=True)
    whole = tiny_run / "run" / "tofu_logs"
    for step in ("step_3", "step_4", "."):
        for file in LOG_FILES.values():
            assert (logs / step / file).read_bytes() == (whole / step / file).read_bytes()


def _write(folder, name, **columns):
    folder.mkdir(parents=True, exist_ok=True)
    log = {key: {str(i): v for i, v in enumerate(values)} for key, values in columns.items()}
    (folder / LOG_FILES[name]).write_text(json.dumps(log))


def _hand_logs(folder, forget_para=(LN2, LN2), forget_pert=((LN2,), (LN2,))):
    _write(folder, "retain", avg_gt_loss=[LN2, LN4], avg_paraphrased_loss=[LN2, LN2],
           average_perturb_loss=[[LN4, LN4], [LN8, LN8]], rougeL_recall=[1.0, 0.5])
    _write(folder, "real_authors", avg_gt_loss=[LN2, LN2], avg_paraphrased_loss=[LN2, LN2],
           average_perturb_loss=[[LN4, LN4, LN4], [LN2, LN2, LN2]], rougeL_recall=[1.0, 1.0])
    _write(folder, "world_facts", avg_gt_loss=[0.0], avg_paraphrased_loss=[0.0],
           average_perturb_loss=[[LN2]], rougeL_recall=[0.5])
    _write(folder, "forget", avg_gt_loss=[LN2, LN2], avg_paraphrased_loss=list(forget_para),
           average_perturb_loss=[list(p) for p in forget_pert], rougeL_recall=[0.0, 1.0])


def test_hand_made_logs_give_hand_computed_figures(tmp_path, capsys):
    _hand_logs(tmp_path / "model")
    # Retain model: R = exp(ln 4 - 0) = 4 on both forget items.
    _hand_logs(tmp_path / "retain", forget_para=(0.0, 0.0), forget_pert=((LN4,), (LN4,)))
    code, got = _score(capsys, tmp_path / "model", "--retain-logs", tmp_path / "retain")
    assert code == 0
    # retain: p = (1/2 + 1/4) / 2; R = 2, 4 -> mean(1 - 1/R) = (1/2 + 3/4) / 2.
    assert got["retain/probability"] == pytest.approx(0.375)
    assert got["retain/rouge_l"] == pytest.approx(0.75)
    assert got["retain/truth_ratio"] == pytest.approx(0.625)
    # real authors: shares 0.5 / (0.5 + 3 * 0.25) and 0.5 / (0.5 + 3 * 0.5); R = 2, 1.
    assert got["real_authors/probability"] == pytest.approx((0.4 + 0.25) / 2)
    assert got["real_authors/truth_ratio"] == pytest.approx(0.25)
    # world facts: share 1 / (1 + 1/2); R = 2.
    assert got["world_facts/probability"] == pytest.approx(2 / 3)
    assert got["world_facts/truth_ratio"] == pytest.approx(0.5)
    reciprocals = 1 / 0.375 + 1 / 0.75 + 1 / 0.625 + 1 / 0.325 + 1 + 4 + 1.5 + 2 + 2
    assert got["model_utility"] == pytest.approx(9 / reciprocals, rel=1e-12)
    # forget: R = 1, 1 -> mean min(R, 1/R) = 1; probability 1/2; ROUGE (0 + 1) / 2.
    assert got["forget/truth_ratio"] == pytest.approx(1.0)
    assert got["forget/probability"] == pytest.approx(0.5)
    assert got["forget/rouge_l"] == pytest.approx(0.5)
    # KS of {1, 1} against {4, 4}: D = 1; exact two-sided p = 2 / C(4, 2) = 1/3.
    assert got["ks_statistic"] == 1.0
    assert got["forget_quality"] == pytest.approx(1 / 3, rel=1e-12)
    code, same = _score(capsys, tmp_path / "model", "--retain-logs", tmp_path / "model")
    assert same["forget_quality"] == 1.0 and same["ks_statistic"] == 0.0
    assert got["n_items"] == {"retain": 2, "real_authors": 2, "world_facts": 1, "forget": 2}


def test_bad_log_folders_give_one_line_errors(tmp_path, capsys):
    good = tmp_path / "good"
    _hand_logs(good)

    def fails(folder, *extra):
        code, err = _score(capsys, folder, *extra)
        assert code == 2 and err.startswith("moopt: error: ") and err.count("\n") == 1
        return err

    assert "does not exist" in fails(tmp_path / "nowhere")
    missing = tmp_path / "missing"
    _hand_logs(missing)
    (missing / LOG_FILES["world_facts"]).unlink()
    assert "eval_real_world_wo_options.json: file missing" in fails(missing)
    no_key = tmp_path / "no_key"
    _hand_logs(no_key)
    _write(no_key, "retain", avg_gt_loss=[LN2, LN4], avg_paraphrased_loss=[LN2, LN2],
           average_perturb_loss=[[LN4], [LN8]])
    err = fails(no_key)
    assert "eval_log.json: missing key 'rougeL_recall'" in err
    bad_value = tmp_path / "bad_value"
    _hand_logs(bad_value)
    _write(bad_value, "forget", avg_gt_loss=[LN2, "x"], avg_paraphrased_loss=[LN2, LN2],
           average_perturb_loss=[[LN2], [LN2]], rougeL_recall=[0.0, 1.0])
    assert "eval_log_forget.json: avg_gt_loss['1'] must be a number" in fails(bad_value)
    ragged = tmp_path / "ragged"
    _hand_logs(ragged)
    _write(ragged, "forget", avg_gt_loss=[LN2, LN2, LN2], avg_paraphrased_loss=[LN2, LN2],
           average_perturb_loss=[[LN2], [LN2]], rougeL_recall=[0.0, 1.0])
    assert "key 'avg_paraphrased_loss' holds 2 items" in fails(ragged)
    not_list = tmp_path / "not_list"
    _hand_logs(not_list)
    _write(not_list, "forget", avg_gt_loss=[LN2], avg_paraphrased_loss=[LN2],
           average_perturb_loss=[LN2], rougeL_recall=[0.0])
    assert "average_perturb_loss['0'] must be a non-empty list" in fails(not_list)
    (not_list / LOG_FILES["forget"]).write_text("[1, 2]")
    assert "expected a JSON object of metrics" in fails(not_list)
    (not_list / LOG_FILES["forget"]).write_text("{oops")
    assert "eval_log_forget.json: not valid JSON" in fails(not_list)
    # Model and retain logs over different numbers of forget items.
    other = tmp_path / "other"
    _hand_logs(other, forget_para=(0.0, 0.0, 0.0), forget_pert=((LN2,), (LN2,), (LN2,)))
    err = fails(good, "--retain-logs", other)
    assert f"{other / LOG_FILES['forget']}: holds 3 forget items but" in err
    assert f"{good / LOG_FILES['forget']} holds 2" in err
