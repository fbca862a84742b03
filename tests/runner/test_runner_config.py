"""RunConfig validation, file loading and override precedence."""

from __future__ import annotations

import json

import pytest

from moopt.runner.config import ConfigError, RunConfig, load_config_file, resolve_config
from tests.runner.toy_task import ToyConfig


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'weight_decy' \(did you mean "
                                          r"'weight_decay'\?\)"):
        resolve_config(RunConfig, overrides=["weight_decy=0.1"])


def test_bad_values_name_their_key():
    with pytest.raises(ConfigError, match=r"config key 'lr'.*greater than 0.*got -1"):
        resolve_config(RunConfig, flags={"lr": -1})
    with pytest.raises(ConfigError, match=r"config key 'betas'.*\[0, 1\).*1.5"):
        resolve_config(RunConfig, overrides=["betas=[0.9, 1.5]"])
    with pytest.raises(ConfigError, match=r"'schedule'.*'retain' must be >= 0"):
        resolve_config(RunConfig, overrides=['schedule={"forget": 1, "retain": -5}'])
    with pytest.raises(ConfigError, match=r"either steps \(10\) or epochs \(2.0\)"):
        resolve_config(RunConfig, overrides=["steps=10", "epochs=2"])


def test_precedence_preset_file_flags_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"lr": 0.2, "seed": 3, "steps": 7}))
    cfg = resolve_config(
        ToyConfig,
        preset={"lr": 0.1, "seed": 1, "steps": 5, "dropout": 0.3, "compare": {"lrs": [1]}},
        file=path,
        flags={"seed": 4, "lr": None},
        overrides=["lr_ratios.a=2.5", "n_batches=9"],
    )
    assert (cfg.lr, cfg.seed, cfg.steps, cfg.dropout, cfg.n_batches) == (0.2, 4, 7, 0.3, 9)
    assert cfg.lr_ratios == {"a": 2.5}


def test_toml_and_yaml_files(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('policy = "decoupled"\n[lr_ratios]\nforget = 3.0\n')
    assert load_config_file(toml) == {"policy": "decoupled", "lr_ratios": {"forget": 3.0}}
    yml = tmp_path / "c.yaml"
    yml.write_text("policy: shared\nschedule: {forget: 1, retain: 5}\n")
    cfg = resolve_config(RunConfig, file=yml)
    assert cfg.policy == "shared" and cfg.schedule == {"forget": 1, "retain": 5}


def test_malformed_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "lr": 0.1,\n  "seed": ,\n}\n')
    with pytest.raises(ConfigError, match=r"bad\.json:3: invalid JSON"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.json")
    lst = tmp_path / "list.json"
    lst.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config_file(lst)


def test_semantic_dict_ignores_runtime_fields(tmp_path):
    a = RunConfig(out=tmp_path / "a", progress=True)
    b = RunConfig(out=tmp_path / "b", progress=False)
    assert a.semantic_dict() == b.semantic_dict()
    assert a.semantic_dict() != RunConfig(lr=0.5).semantic_dict()
