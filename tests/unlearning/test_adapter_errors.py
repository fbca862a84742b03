"""Bad input to the unlearning task: clear errors, nothing half-written."""

from __future__ import annotations

import json

import pytest
from moopt.tasks.unlearning.adapter import UnlearningTask, load_data
from moopt.tasks.unlearning.config import UnlearningConfig

from moopt.cli import main


def _run(tmp_path, *args):
    return main(["run", "unlearning", "--preset", "smoke", "--out", str(tmp_path / "out"),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress", *args])


def test_unknown_loss_name(tmp_path, capsys):
    assert _run(tmp_path, "--loss", "foo+gd") == 2
    err = capsys.readouterr().err
    assert "unknown forget objective 'foo'" in err and "npo" in err
    assert not (tmp_path / "out").exists()
    assert _run(tmp_path, "--loss", "npo") == 2
    assert "'forget+retain'" in capsys.readouterr().err


def test_reference_loss_without_reference_model(tmp_path, capsys):
    assert _run(tmp_path, "--loss", "npo+gd", "--use-reference", "false") == 2
    assert "['npo'] need(s) a reference model" in capsys.readouterr().err
    assert _run(tmp_path, "--loss", "ga+kl", "--use-reference", "false") == 2
    assert "['kl'] need(s) a reference model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_loss_option(tmp_path, capsys):
    assert _run(tmp_path, "--set", 'loss_options={"npo": {"betta": 1}}') == 2
    assert "betta" in capsys.readouterr().err


def test_model_path_that_is_not_a_causal_lm(tmp_path, capsys):
    assert _run(tmp_path, "--model", str(tmp_path / "nowhere")) == 2  # checked first
    assert "no such directory" in capsys.readouterr().err
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertForSequenceClassification"],
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 100}))
    assert _run(tmp_path, "--model", str(bert), "--retain-model", str(bert)) == 2
    err = capsys.readouterr().err
    assert "is not a causal language model" in err and "BertForSequenceClassification" in err
    # The run failed before training: no run directory was created.
    assert not (tmp_path / "out").exists()


def _tofu_dir(tmp_path, forget_lines):
    d = tmp_path / "tofu"
    d.mkdir()
    (d / "forget01.json").write_text("\n".join(forget_lines) + ("\n" if forget_lines else ""))
    return d


def test_malformed_data_file_names_file_and_line(tmp_path, capsys):
    good = json.dumps({"task_id": "1", "question": "Who?", "answer": "Me."})
    d = _tofu_dir(tmp_path, [good, '{"task_id": "1", "question": "Who?",'])
    assert _run(tmp_path, "--data-dir", str(d)) == 2
    assert "forget01.json:2: invalid JSON" in capsys.readouterr().err


def test_empty_forget_set(tmp_path):
    d = _tofu_dir(tmp_path, [])
    with pytest.raises(ValueError, match="forget01.json: file holds no records"):
        load_data(UnlearningConfig(data_dir=d))
    other = tmp_path / "other"
    other.mkdir()
    (other / "forget01.json").write_text(
        json.dumps({"task_id": "2", "question": "Who?", "answer": "Me."}) + "\n")
    with pytest.raises(ValueError, match="no item has task_id '1'"):
        load_data(UnlearningConfig(data_dir=other))


def test_missing_data_dir(tmp_path, capsys):
    assert _run(tmp_path, "--data-dir", str(tmp_path / "missing")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_directory_of_another_run_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"task": "unlearning", "lr": 0.5}))
    (out / "metrics.json").write_text("{}")
    assert _run(tmp_path) == 2
    assert "holds another run" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == "{}"


def test_presets_are_valid_configs():
    from moopt.runner.config import resolve_config

    for name, preset in UnlearningTask.presets.items():
        # A preset's requirements (tofu: data_dir) are given a value here.
        needs = {k: "x" for k in preset.get("requires", {})}
        cfg = resolve_config(UnlearningConfig, preset=preset, flags=needs)
        assert cfg.objective_names() == ("npo", "gd"), name
        assert cfg.schedule == {"forget": 1, "retain": 5}
