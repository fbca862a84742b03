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

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

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

    task: str | None = Field(None, description="task name (filled in by the runner)")
    preset: str | None = Field(None, description="preset the config started from")
    seed: int = Field(0, ge=0, description="seed of every random choice of the run")
    policy: str = Field("bridged", description="state-sharing policy name")
    storage: str | dict[str, str] = Field(
        "fp32", description="storage backend, or {role: backend} (roles: base, delta, shared)"
    )
    schedule: dict[str, int] | Literal["round_robin", "joint"] | None = None
    weights: dict[str, float] | None = Field(None, description="objective weights (joint)")
    lr: float = Field(1e-3, gt=0)
    lr_ratios: dict[str, float] = Field(default_factory=dict)
    betas: tuple[float, float] = (0.9, 0.95)
    base_betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
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
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
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


def _format_validation_error(err: ValidationError, known: Iterable[str]) -> str:
    lines = []
    known = list(known)
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(config)"
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(item["loc"][0]), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"unknown config key {key!r}{hint}")
        else:
            msg = item["msg"]
            got = item.get("input")
            shown = "" if isinstance(got, dict) and item["loc"] == () else f" (got {got!r})"
            lines.append(f"config key {key!r}: {msg}{shown}")
    return "; ".join(lines)


def validate_config(cls: type[RunConfig], data: Mapping[str, Any]) -> RunConfig:
    """``cls(**data)`` with errors turned into one :class:`ConfigError` naming the keys."""
    try:
        return cls.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, cls.model_fields)) from None


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
        raise ConfigError(f"{path}: cannot parse config: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"lr_ratios.forget=2"`` -> ``(["lr_ratios", "forget"], 2)``. Values are read as JSON
    when they parse (numbers, true/false/null, lists, dicts), else kept as strings."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


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


def resolve_config(
    cls: type[RunConfig],
    *,
    preset: Mapping[str, Any] | None = None,
    file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> RunConfig:
    """Merge the layers (see the module docstring) and validate the result."""
    data: dict[str, Any] = {}
    data.update({k: v for k, v in (preset or {}).items() if k != "compare"})
    if file is not None:
        data.update(load_config_file(file))
    data.update({k: v for k, v in (flags or {}).items() if v is not None})
    for text in overrides:
        path, value = parse_override(text)
        if isinstance(data.get(path[0]), dict) and len(path) > 1:
            data[path[0]] = dict(data[path[0]])  # do not mutate the preset's dict
        apply_override(data, path, value)
    return validate_config(cls, data)


def write_config(cfg: RunConfig, path: Path) -> None:
    """Write the resolved config as JSON (atomically: no half-written file on a crash)."""
    write_json_atomic(path, cfg.model_dump(mode="json"))
