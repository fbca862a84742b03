"""``moopt run TASK --help``: the task's options in the help, generated from its config class
(type, description, default; a preset's value where it differs from the class default).

Example:
    >>> from moopt.cli import main
    >>> main(["run", "unlearning", "--help"])  # doctest: +ELLIPSIS
    usage: moopt run ...
    options of task 'unlearning':
    ...
      --task-id TEXT ...
    0
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from moopt.runner.config import ConfigError

# Config fields with a flag of their own (or set by the runner): not repeated as task options.
COMMON_FLAGS = ("policy", "storage", "data_dir", "model", "out", "seed", "lr", "steps")
OWN_FLAG_FIELDS = frozenset(COMMON_FLAGS) | {"cache_dir", "progress", "task", "preset"}


class ProbeError(Exception):
    pass


class ProbeParser(argparse.ArgumentParser):
    """Finds the task of ``moopt run TASK --help`` without printing or exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ProbeError(message)


def preset_of(task: Any, name: str | None) -> dict[str, Any]:
    """The preset ``name`` of ``task`` (default: its default preset) with its name under
    ``"preset"``; ``{}`` when there is none. Unknown names are errors listing the presets."""
    preset_name = name or task.default_preset
    if preset_name is None:
        return {}
    if preset_name not in task.presets:
        known = ", ".join(sorted(task.presets)) or "(none)"
        raise ConfigError(f"unknown preset {preset_name!r} of task {task.name!r}; "
                       f"presets: {known}")
    preset = dict(task.presets[preset_name])
    preset["preset"] = preset_name
    return preset


def preset_summary(cls: Any) -> str:
    """``demo, smoke, tofu (needs --data-dir)``: a task's presets and what they need."""
    from moopt.runner.config import required_by_preset

    names = []
    for name in sorted(cls.presets):
        needs = required_by_preset(cls.presets[name])
        names.append(name + (f" (needs {', '.join('--' + k.replace('_', '-') for k in needs)})"
                             if needs else ""))
    return ", ".join(names) or "-"


def task_for_help(argv: Sequence[str]) -> tuple[Any, str | None] | None:
    """``(task class, preset name)`` of ``moopt run|compare TASK ... --help``, else None."""
    if not any(a in ("-h", "--help") for a in argv):
        return None
    rest = [a for a in argv if a not in ("-h", "--help")]
    from moopt.cli import build_parser

    try:
        args, _ = build_parser(probe=True).parse_known_args(rest)
    except ProbeError:
        return None
    if args.command not in ("run", "compare") or not args.task:
        return None
    from moopt.runner.discovery import get_task_class

    return get_task_class(args.task), args.preset


def add_task_help(parser: argparse.ArgumentParser, task_cls: Any, preset_name: str | None) -> None:
    """Describe every config field of ``task_cls`` in ``parser``'s help: the task's own
    options as a group, and the defaults of the flags that set common fields."""
    from moopt.runner.fieldtypes import describe_type, metavar, show_value

    fields = task_cls.config_class.model_fields
    preset = preset_of(task_cls, preset_name) if (preset_name or task_cls.default_preset) \
        else {}
    name = preset.get("preset")

    def default_text(key: str) -> str:
        base = fields[key].get_default(call_default_factory=True)
        text = f"default: {show_value(base)}"
        if key in preset and preset[key] != base:
            text = f"preset {name}: {show_value(preset[key])}; class {text}"
        return text

    usage = parser.format_usage().removeprefix("usage: ").rstrip()
    parser.usage = usage.replace("%", "%%") + " [--TASK-OPTION VALUE ...]"
    for action in parser._actions:
        key = action.dest
        if key == "preset":
            action.help = (f"named preset of the task (default: {task_cls.default_preset}; "
                           f"presets: {preset_summary(task_cls)})")
        elif (key in fields and key != "task" and action.help
              and (key in preset or "default" not in action.help)):
            action.help = f"{action.help} ({default_text(key)})"
    needs = [f"--{k.replace('_', '-')}" for k in preset.get("requires", {})]
    info = ("each sets the config key of the same name (--eval-every N sets eval_every; "
            "--set KEY=VALUE works too); values are read by the key's type, JSON for lists "
            "and mappings; defaults are the config class's"
            + (f", or those of preset {name!r} where it sets the key" if name else "")
            + (f"; preset {name!r} needs {', '.join(needs)}" if needs else ""))
    group = parser.add_argument_group(f"options of task {task_cls.name!r}", info)
    for key in sorted(set(fields) - OWN_FLAG_FIELDS):
        field = fields[key]
        kind = describe_type(field.annotation)
        what = f"{field.description} ({kind}; " if field.description else f"{kind} ("
        group.add_argument("--" + key.replace("_", "-"), dest=f"_task_{key}",
                           metavar=metavar(field.annotation),
                           help=(what + default_text(key) + ")").replace("%", "%%"))
    parser.epilog = None


def print_task_help(argv: Sequence[str], found: tuple[Any, str | None]) -> int:
    from moopt.cli import build_parser

    parser = build_parser()
    command = next(a for a in argv if a in ("run", "compare"))
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    add_task_help(sub.choices[command], *found)
    sub.choices[command].print_help()
    return 0
