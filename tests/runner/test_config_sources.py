"""Config layers read the way a user means them: values by the field's type, a later layer's
``epochs`` replacing an earlier ``steps``, presets that name what they need."""

from __future__ import annotations

import pytest

from moopt.runner.config import ConfigError, RunConfig, resolve_config
from moopt.runner.discovery import get_task_class, list_tasks
from moopt.runner.fieldtypes import describe_type, parse_text_value, show_value


def _config_classes():
    return [get_task_class(t).config_class for t in list_tasks()] + [RunConfig]


@pytest.mark.parametrize("config_class", _config_classes(), ids=lambda c: c.__name__)
def test_every_default_typed_back_on_the_command_line_is_the_default(config_class):
    """What --help shows as a default, typed back as ``--name VALUE``, gives that default."""
    for name, field in config_class.model_fields.items():
        default = field.get_default(call_default_factory=True)
        text = show_value(default)
        value = parse_text_value(field.annotation, text)
        cfg = config_class.model_validate({name: value})
        assert getattr(cfg, name) == default, (name, text, value)


@pytest.mark.parametrize("annotation, text, expected", [
    (str, "2", "2"), (str | None, "2", "2"), (str | None, "null", None), (int, "2", 2),
    (float, "1e-3", 1e-3), (bool, "false", False), (str, "true", "true"),
    (str | dict[str, str], '{"base": "int8"}', {"base": "int8"}),
    (str | dict[str, str], '{"base": 1}', {"base": 1}),  # JSON object: kept, then rejected
    (int, "x", "x"), (int, "[1]", [1]),  # neither reading fits: reported as typed
])
def test_text_values_are_read_by_type(annotation, text, expected):
    assert parse_text_value(annotation, text) == expected
    assert type(parse_text_value(annotation, text)) is type(expected)


def test_types_in_words():
    assert describe_type(dict[str, int] | None) == "a mapping of name to integer or null"
    assert describe_type(tuple[float, float]) == "a list of 2 numbers"
    assert describe_type(list[str] | None) == "a list of strings or null"


def test_a_later_layer_setting_epochs_drops_an_earlier_steps():
    cfg = resolve_config(RunConfig, preset={"steps": 60}, overrides=["epochs=1"])
    assert (cfg.steps, cfg.epochs) == (None, 1.0)
    cfg = resolve_config(RunConfig, preset={"epochs": 3}, flags={"steps": 5})
    assert (cfg.steps, cfg.epochs) == (5, None)
    # A layer that sets nothing about length keeps the earlier one's.
    assert resolve_config(RunConfig, preset={"steps": 60}, flags={"lr": 0.1}).steps == 60
    # One layer setting both still contradicts itself.
    with pytest.raises(ConfigError, match=r"either steps \(10\) or epochs \(2.0\)"):
        resolve_config(RunConfig, preset={"steps": 60}, overrides=["steps=10", "epochs=2"])


def test_dotted_override_leaves_the_preset_unchanged():
    preset = {"optimizer_options": {"a": {"b": 1}}}
    cfg = resolve_config(RunConfig, preset=preset, overrides=["optimizer_options.a.b=2"])
    assert cfg.optimizer_options == {"a": {"b": 2}}
    assert preset == {"optimizer_options": {"a": {"b": 1}}}


def test_preset_requirements():
    preset = {"steps": 5, "requires": {"data_dir": "the data"}, "preset": "real"}
    with pytest.raises(ConfigError, match=r"preset 'real' needs --data-dir: the data"):
        resolve_config(RunConfig, preset=preset)
    cfg = resolve_config(RunConfig, preset=preset, flags={"data_dir": "d"})
    assert str(cfg.data_dir) == "d" and cfg.steps == 5


def test_a_loss_given_later_drops_the_presets_loss_options():
    from moopt.tasks.unlearning.config import UnlearningConfig

    preset = {"loss": "npo+gd", "loss_options": {"npo": {"beta": 1.0}}}
    cfg = resolve_config(UnlearningConfig, preset=preset, options={"loss": "ga+kl"})
    assert (cfg.loss, cfg.loss_options) == ("ga+kl", {})
    # Given in the same layer, or later, they stay.
    cfg = resolve_config(UnlearningConfig, preset=preset, options={"loss": "npo+kl"},
                         overrides=['loss_options={"npo": {"beta": 0.5}}'])
    assert cfg.loss_options == {"npo": {"beta": 0.5}}
    assert resolve_config(UnlearningConfig, preset=preset).loss_options == {"npo": {"beta": 1.0}}
