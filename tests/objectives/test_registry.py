"""Objective registry, metadata, hyperparameter binding and pair parsing."""

from __future__ import annotations

import pytest
import torch

from moopt.errors import UnknownNameError
from moopt.objectives import (
    OBJECTIVES,
    PAPER_PAIRS,
    BadHyperparameterError,
    get_objective,
    list_objectives,
    objective_info,
    parse_pair,
    register_objective,
)

BUILTIN = {
    "ga": ("forget", False, {}),
    "npo": ("forget", True, {"beta": 0.1}),
    "simnpo": ("forget", False, {"beta": 2.5, "gamma": 0.0}),
    "dpo": ("forget", True, {"beta": 0.1}),
    "idk": ("forget", False, {}),
    "me": ("forget", False, {}),
    "gd": ("retain", False, {}),
    "kl": ("retain", True, {}),
    "ap": ("retain", False, {"beta": 0.1}),
    "sft": ("any", False, {}),
    "ce": ("any", False, {}),
}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_metadata(name):
    role, needs_ref, defaults = BUILTIN[name]
    info = objective_info(name)
    assert (info.name, info.role, info.needs_reference) == (name, role, needs_ref)
    assert dict(info.defaults) == defaults
    assert info.description and "\n" not in info.description
    assert dict(get_objective(name).hparams) == defaults


def test_listing():
    assert set(BUILTIN) <= set(list_objectives())
    assert list_objectives() == sorted(list_objectives())
    forget = set(list_objectives("forget"))
    assert {"ga", "npo", "sft", "ce"} <= forget and "gd" not in forget
    assert set(list_objectives("any")) >= {"sft", "ce"} and "npo" not in list_objectives("any")
    with pytest.raises(ValueError, match="'both'"):
        list_objectives("both")


def test_hyperparameter_binding_and_errors():
    assert get_objective("npo", beta=0.2).hparams["beta"] == 0.2
    assert repr(get_objective("simnpo", gamma=1.0)) == "Objective('simnpo', beta=2.5, gamma=1.0)"
    with pytest.raises(BadHyperparameterError, match=r"'npo' has no hyperparameter\(s\) \['bta'\]"):
        get_objective("npo", bta=0.2)
    with pytest.raises(BadHyperparameterError, match="accepts: \\(none\\)"):
        get_objective("gd", beta=1.0)
    with pytest.raises(UnknownNameError, match="unknown objective 'nope'; known: .*npo"):
        get_objective("nope")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "x"])
def test_bad_beta_named(bad):
    x = {
        "input_ids": torch.zeros(1, 2, dtype=torch.long),
        "attention_mask": torch.ones(1, 2),
        "labels": torch.tensor([[-100, 1]]),
    }
    obj = get_objective("simnpo", beta=bad)
    with pytest.raises(BadHyperparameterError, match=f"'simnpo': beta must be .*{bad!r}"):
        obj(lambda **kw: torch.zeros(1, 2, 3), x)


def test_register_custom_and_errors():
    @register_objective("t_custom", role="retain")
    def t_custom(model, batch, ctx, *, scale: float = 2.0):
        """Scaled mean of the outputs.

        More text that is not the description."""
        return scale * model(batch["x"]).mean()

    try:
        info = objective_info("t_custom")
        assert info.description == "Scaled mean of the outputs."
        assert dict(info.defaults) == {"scale": 2.0}
        out = get_objective("t_custom", scale=3.0)(torch.nn.Identity(), {"x": torch.ones(3)})
        assert out.item() == 3.0
        assert parse_pair("ga+t_custom") == ("ga", "t_custom")
        with pytest.raises(ValueError, match="already registered"):
            register_objective("t_custom")(t_custom)
    finally:
        OBJECTIVES.unregister("t_custom")
    assert "t_custom" not in list_objectives()

    with pytest.raises(ValueError, match="role must be one of .* got 'neither'"):
        register_objective("t_bad", role="neither")
    with pytest.raises(TypeError, match=r"exactly \(model, batch, ctx\)"):
        register_objective("t_bad")(lambda model, batch: model)
    with pytest.raises(TypeError, match="hyperparameter 'beta' needs a default"):

        def no_default(model, batch, ctx, *, beta):
            return model

        register_objective("t_bad")(no_default)
    assert "t_bad" not in list_objectives()


def test_ctx_type_checked():
    with pytest.raises(TypeError, match="ctx must be an ObjectiveContext, got dict"):
        get_objective("gd")(torch.nn.Identity(), {}, {"ref_model": None})


def test_parse_pair_ok():
    assert parse_pair("npo+gd") == ("npo", "gd")
    assert parse_pair(" ME + GD ") == ("me", "gd")
    assert parse_pair("sft+sft") == ("sft", "sft")  # role "any" fits both slots
    for pair in PAPER_PAIRS:
        assert "+".join(parse_pair(pair)) == pair


@pytest.mark.parametrize(
    ("spec", "exc", "pattern"),
    [
        ("npo", ValueError, "exactly one '\\+'"),
        ("npo+gd+kl", ValueError, "exactly one '\\+'"),
        ("+gd", ValueError, "forget objective name is empty"),
        ("npo+", ValueError, "retain objective name is empty"),
        ("nop+gd", UnknownNameError, "unknown forget objective 'nop'; forget objectives: .*ga"),
        ("npo+gdd", UnknownNameError, "unknown retain objective 'gdd'; retain objectives: .*gd"),
        ("gd+npo", ValueError, "'gd' is a retain objective and cannot be the forget part"),
        ("npo+ga", ValueError, "'ga' is a forget objective and cannot be the retain part"),
    ],
)
def test_parse_pair_errors(spec, exc, pattern):
    with pytest.raises(exc, match=pattern):
        parse_pair(spec)
    with pytest.raises(TypeError, match="got tuple"):
        parse_pair(("npo", "gd"))
