"""Run configuration: the common fields of every task, validation, file loading, overrides.

Precedence (later wins): class defaults < preset < ``--config FILE`` < command-line flags
< ``--set key=value``. Unknown keys are errors that name the key (and suggest the closest
known one), so a typo never silently falls back to a default.

Example:
    >>> from moopt.runner.config import RunConfig, resolve_config
    >>> cfg = resolve_config(RunConfig, preset={"lr": 0.01}, overrides=["steps=20"])
    >>> (cfg.lr, cfg.steps, cfg.policy)
    (0.01, 20, 'bridged')
    >>> resolve_config(RunConfig, overrides=["lrr=1"])
    Traceback (most recent call last):
    ...
    moopt.runner.config.ConfigError: unknown config key 'lrr' (did you mean 'lr'?)
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moopt.errors import MooptError
from moopt.runner.atomic import write_json_atomic

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")

# Fields that say where/how a run is shown or stored, not what it computes: two configs that
# differ only here describe the same run (so --resume accepts them).
RUNTIME_FIELDS = frozenset({"out", "progress", "cache_dir"})


class ConfigError(MooptError, ValueError):
    """A configuration value or key is invalid; the message names it."""


class RunConfig(BaseModel):
    """Fields common to every task. Tasks subclass it to add their own.

    Schedules: ``schedule`` is a dict of alternation frequencies (``{"forget": 1, "retain":
    5}``: one forget step, then five retain steps, repeating), ``"round_robin"`` (one step
    per objective in turn), ``"joint"`` (every step uses all objectives, weighted by
    ``weights``), or ``None`` (the task's default, else round robin).

    Example:
        >>> RunConfig(lr=1e-4, schedule={"forget": 1, "retain": 5}).schedule
        {'forget': 1, 'retain': 5}
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Keys whose value a later config layer (preset < file < flags < --set) makes stale: a
    # layer that sets the key drops these from earlier layers unless it sets them too
    # (``--set epochs=2`` over a preset's ``steps``). Subclasses may add their own.
    layer_resets: ClassVar[dict[str, tuple[str, ...]]] = {"steps": ("epochs",),
                                                           "epochs": ("steps",)}

    task: str | None = Field(None, description="task name (filled in by the runner)")
    preset: str | None = Field(None, description="preset the config started from")
    seed: int = Field(0, ge=0, description="seed of every random choice of the run")
    policy: str = Field("bridged", description="state-sharing policy name")
    storage: str | dict[str, str] = Field(
        "fp32", description="storage backend, or {role: backend} (roles: base, delta, shared)"
    )
    schedule: dict[str, int] | Literal["round_robin", "joint"] | None = Field(
        None, description='objective order: {"forget": 1, "retain": 5} (alternation '
        "frequencies), round_robin, joint (every objective each step), or null (the task's "
        "default)")
    weights: dict[str, float] | None = Field(None, description="objective weights (joint)")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    lr_ratios: dict[str, float] = Field(
        default_factory=dict, description="per-objective learning-rate factors (lr_k = lr * "
        "ratio_k; default 1)")
    betas: tuple[float, float] = Field(
        (0.9, 0.95), description="Adam betas (b1, b2) of the per-objective / shared moments")
    base_betas: tuple[float, float] = Field(
        (0.9, 0.95), description="betas (b3, b4) of the bridged policy's base moments")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon")
    weight_decay: float = Field(0.0, ge=0, description="decoupled (AdamW) weight decay")
    max_grad_norm: float | None = Field(None, gt=0, description="clip gradients to this norm")
    optimizer_options: dict[str, Any] = Field(
        default_factory=dict, description="extra keyword arguments of the optimizer"
    )
    steps: int | None = Field(None, gt=0, description="optimizer steps (default 100)")
    epochs: float | None = Field(None, gt=0, description="or: epochs of the task's data")
    eval_every: int = Field(0, ge=0, description="evaluate every N steps (0: only at the end)")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every N steps (0: at end)")
    out: Path | None = Field(None, description="run directory")
    data_dir: Path | None = Field(None, description="task data directory (None: embedded)")
    model: Path | None = Field(None, description="local checkpoint to start from")
    cache_dir: Path | None = Field(None, description="cache of prepared artefacts")
    progress: bool = Field(True, description="show a progress bar on a TTY")
    threads: int | None = Field(
        None, gt=0, description="torch intra-op CPU threads during the run (None: torch's "
        "default); part of the run's identity, since it can change floating-point results")
    device: str = Field(
        "auto", description="where the model trains: auto (cuda when available, else cpu), "
        "cpu, cuda or cuda:N; under torchrun each rank takes cuda:LOCAL_RANK")
    precision: Literal["fp32", "bf16-mixed", "bf16"] = Field(
        "fp32", description="fp32; bf16-mixed (bfloat16 autocast, float32 weights); bf16 "
        "(bfloat16 weights; optimizer state and update in float32 or the chosen storage)")
    grad_accum: int = Field(
        1, ge=1, description="micro-batches per optimizer step (each objective draws this "
        "many batches per step; their losses are averaged, weighted by item count)")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in backward (Hugging Face models only)")
    parallel: Literal["none", "ddp", "fsdp"] = Field(
        "none", description="under torchrun: none (replicas, gradients averaged by moopt), "
        "ddp (DistributedDataParallel) or fsdp (FSDP2 fully_shard: parameters, gradients and "
        "optimizer state sharded)")

    @field_validator("betas", "base_betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        for b in value:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"each beta must be in [0, 1), got {b!r}")
        return value

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        if not DEVICE_PATTERN.fullmatch(value):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("schedule")
    @classmethod
    def _positive_frequencies(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if not value:
                raise ValueError("an alternating schedule needs at least one objective")
            for name, freq in value.items():
                if freq < 0:
                    raise ValueError(f"frequency of {name!r} must be >= 0, got {freq}")
            if not any(value.values()):
                raise ValueError("at least one schedule frequency must be positive")
        return value

    @field_validator("lr_ratios", "weights")
    @classmethod
    def _non_negative(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, x in (value or {}).items():
            if x < 0:
                raise ValueError(f"value of {name!r} must be >= 0, got {x}")
        return value

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> RunConfig:
        if self.steps is not None and self.epochs is not None:
            raise ValueError(
                f"set either steps ({self.steps}) or epochs ({self.epochs}), not both"
            )
        return self

    def semantic_dict(self) -> dict[str, Any]:
        """The config as JSON-able data without the run-time-only fields (out, progress...)."""
        data = self.model_dump(mode="json")
        return {k: v for k, v in data.items() if k not in RUNTIME_FIELDS}


def _format_validation_error(err: ValidationError, cls: type[BaseModel]) -> str:
    """One line naming every bad key with the value given and what the key accepts, in the
    user's terms (no validator internals such as union member tags)."""
    from moopt.runner.fieldtypes import describe_type, field_type, show_value

    known = list(cls.model_fields)
    lines: list[str] = []
    unions_done: set[str] = set()
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(loc[0], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"unknown config key {'.'.join(loc)!r}{hint}")
            continue
        msg = str(item["msg"]).removeprefix("Value error, ")
        if not loc:  # a check of the whole config (e.g. steps and epochs both set)
            lines.append(msg)
            continue
        name = loc[0]
        annotation = cls.model_fields[name].annotation if name in cls.model_fields else None
        members = [m for m in _union_members(annotation) if m is not type(None)]
        if len(members) > 1 and item["type"] != "value_error":
            # One clause for the whole union, not one per member pydantic tried.
            if name not in unions_done:
                unions_done.add(name)
                lines.append(f"config key {name!r}: expected {describe_type(annotation)}, "
                             f"got {show_value(_input_of(err, name, item))}")
            continue
        key = ".".join(loc)
        if item["type"] == "value_error":
            lines.append(f"config key {name!r}: {msg}")
        elif item["type"].endswith(("_type", "_parsing")) or item["type"] == "literal_error":
            expected = describe_type(field_type(cls, loc))
            lines.append(f"config key {key!r}: expected {expected}, "
                         f"got {show_value(item.get('input'))}")
        else:  # a bound or length constraint: "Input should be greater than 0"
            msg = msg.replace("Input should be", "must be")
            lines.append(f"config key {key!r}: {msg}, got {show_value(item.get('input'))}")
    return "; ".join(lines)


def _union_members(annotation: object) -> tuple[object, ...]:
    from moopt.runner.fieldtypes import _members

    return _members(annotation) if annotation is not None else ()


def _input_of(err: ValidationError, name: str, item: dict[str, Any]) -> Any:
    """The value given for the union field ``name``: an error at ``(name, member)`` carries
    all of it, one deeper in a member only the part that member looked at."""
    for other in err.errors():
        if len(other["loc"]) == 2 and other["loc"][0] == name:
            return other.get("input")
    return item.get("input")


def validate_config(cls: type[RunConfig], data: Mapping[str, Any]) -> RunConfig:
    """``cls(**data)`` with errors turned into one :class:`ConfigError` naming the keys."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, cls)) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config mapping from ``.json``, ``.toml`` or ``.yaml``/``.yml``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(
                    f"reading {str(path)!r} needs PyYAML (pip install pyyaml); "
                    "or write the config as .json or .toml"
                ) from None
            data = yaml.safe_load(text)
        else:
            raise ConfigError(
                f"config file {str(path)!r}: unknown format {suffix!r} (use .json, .toml, .yaml)"
            )
    except ConfigError:
        raise
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    except Exception as err:  # tomllib / yaml errors carry the line in their message
        raise ConfigError(f"{path}: cannot parse config: {_one_line(err)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data


def _one_line(err: Exception) -> str:
    """A parser error in one line: YAML's are several (problem, position, a code excerpt)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(err).split())


def parse_override(text: str, config_class: type[BaseModel] | None = None) -> tuple[list[str], Any]:
    """``"lr_ratios.forget=2"`` -> ``(["lr_ratios", "forget"], 2)``. The value is read as
    the key's type reads it (:func:`moopt.runner.fieldtypes.parse_text_value`: JSON where
    the field accepts it, else the text, so ``task_id=2`` gives a string field ``"2"``);
    without ``config_class`` as JSON when it parses, else as text."""
    from moopt.runner.fieldtypes import field_type, parse_text_value

    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    path = key.split(".")
    annotation = field_type(config_class, path) if config_class is not None else Any
    return path, parse_text_value(annotation, raw)


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating nested dicts as needed."""
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


# Keys of a preset that describe the preset rather than set config fields.
PRESET_META_KEYS = frozenset({"compare", "requires"})

def _merge_layer(data: dict[str, Any], layer: Mapping[str, Any],
                 resets: Mapping[str, Sequence[str]]) -> None:
    """``data.update(layer)``, after dropping the earlier keys that a key this layer sets
    resets (``RunConfig.layer_resets``) unless the layer sets them too."""
    for key, value in layer.items():
        if value is None:
            continue
        for other in resets.get(key, ()):
            if layer.get(other) is None:
                data.pop(other, None)
    data.update(layer)


def required_by_preset(preset: Mapping[str, Any] | None) -> dict[str, str]:
    """``{field: why}`` of the fields a preset needs the user to set (its ``"requires"``)."""
    return dict((preset or {}).get("requires") or {})


def resolve_config(
    cls: type[RunConfig],
    *,
    preset: Mapping[str, Any] | None = None,
    file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
    options: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Merge the layers (see the module docstring) and validate the result.

    Each layer (preset, file, flags, all ``--set`` overrides) replaces the keys it sets; one
    that sets ``epochs`` also drops an earlier layer's ``steps`` and vice versa (the config
    class's ``layer_resets``: the unlearning task's ``loss`` drops ``loss_options``). A preset's
    ``"requires": {field: why}`` names fields it cannot do without (``tofu`` needs
    ``data_dir``): leaving one unset is an error that says why. ``flags`` left ``None`` are
    not given; ``options`` (a task's ``--name value`` options) are part of the flags' layer
    and may set a field to ``None``.
    """
    data: dict[str, Any] = {}
    resets = getattr(cls, "layer_resets", {})
    _merge_layer(data, {k: v for k, v in (preset or {}).items() if k not in PRESET_META_KEYS},
                 resets)
    if file is not None:
        _merge_layer(data, load_config_file(file), resets)
    _merge_layer(data, {**{k: v for k, v in (flags or {}).items() if v is not None},
                        **dict(options or {})}, resets)
    layer: dict[str, Any] = {}
    for text in overrides:
        path, value = parse_override(text, cls)
        if len(path) > 1 and path[0] not in layer and isinstance(data.get(path[0]), dict):
            # A dotted key changes one entry of the dict so far (a copy: presets stay as is).
            layer[path[0]] = copy.deepcopy(data[path[0]])
        apply_override(layer, path, value)
    _merge_layer(data, layer, resets)
    cfg = validate_config(cls, data)
    missing = {k: why for k, why in required_by_preset(preset).items()
               if getattr(cfg, k, None) is None}
    if missing:
        name = (preset or {}).get("preset") or cfg.preset
        raise ConfigError((f"preset {name!r}" if name else "the preset") + " needs " + "; ".join(
            f"{'--' + k.replace('_', '-')}: {why}" for k, why in missing.items()))
    return cfg


def write_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config as JSON (atomically: no half-written file on a crash)."""
    write_json_atomic(path, cfg.model_dump(mode="json"))
