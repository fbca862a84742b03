"""The ``moopt`` command line: ``run``, ``compare`` and ``list``.

    moopt run TASK [--preset NAME] [--config FILE] [--policy P] [--storage S] [--out DIR]
                   [--seed N] [--lr X] [--steps N] [--data-dir DIR] [--model PATH]
                   [--resume | --overwrite] [--set key=value ...] [--TASK-OPTION VALUE ...]
    moopt compare TASK [--preset NAME] [--policies a,b] [--storages fp32,int8] [--lrs 1e-3,3e-3]
                   [--seeds 0,1] [--vary FIELD=V1,V2 ...] [--baseline POLICY/STORAGE]
                   --out DIR [...same options as run]
    moopt list
    moopt run TASK --help          # every option of TASK, with its default and description
    moopt --version
    moopt COMMAND ...   (subcommands of installed plug-ins, e.g. ``moopt tofu-score``)

Task-specific options are the fields of the task's config class: ``--loss npo+gd`` sets
``loss``; ``--eval-every 10`` sets ``eval_every``. ``--storage`` takes one backend name or
per-role names (``base=fp32,delta=int8``). ``compare --vary mode=alternating,joint`` adds
(or replaces) a grid axis over any config field; a field the preset's grid varies but the
command line sets (``--mode joint``, ``--set mode=joint``) is held at that value. Values
are read by the field's type: ``--task-id 2`` gives a string field the string ``"2"``,
``--steps 2`` an int field the number 2 (:mod:`moopt.runner.fieldtypes`). ``--dry-run``
resolves and checks everything, prints the config (and a comparison's grid) and stops.

Example:
    >>> from moopt.cli import main
    >>> main(["list"])  # doctest: +ELLIPSIS
    tasks:
    ...
    0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moopt.cli_help import (
    COMMON_FLAGS,
    OWN_FLAG_FIELDS,
    ProbeParser,
    preset_of,
    preset_summary,
    print_task_help,
    task_for_help,
)
from moopt.errors import MooptError


class CLIError(MooptError, ValueError):
    """A command-line argument is invalid."""


def _csv(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def parse_storage(text: str) -> str | dict[str, str]:
    """``"int8"`` -> ``"int8"``; ``"base=fp32,delta=int8"`` -> ``{"base": ..., "delta": ...}``."""
    if "=" not in text:
        return text
    out = {}
    for part in _csv(text):
        role, sep, name = part.partition("=")
        if not sep or not role or not name:
            raise CLIError(f"--storage {text!r}: expected NAME or role=NAME,role=NAME")
        out[role.strip()] = name.strip()
    return out


def parse_axis(text: str) -> tuple[str, list[Any]]:
    """``"mode=alternating,joint"`` -> ``("mode", ["alternating", "joint"])`` (JSON values
    where they parse: ``"lr_ratio=1,2"`` gives numbers)."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip() or not _csv(values):
        raise argparse.ArgumentTypeError(f"--vary {text!r}: expected FIELD=V1,V2,...")
    out: list[Any] = []
    for value in _csv(values):
        try:
            out.append(json.loads(value))
        except json.JSONDecodeError:
            out.append(value)
    return name.strip().replace("-", "_"), out


def parse_baseline(text: str) -> tuple[str, str | dict[str, str] | None]:
    """``"shared/fp32"`` -> ``("shared", "fp32")``; ``"shared"`` -> ``("shared", None)``
    (the policy's first storage in the grid)."""
    policy, sep, storage = text.partition("/")
    if not policy.strip() or (sep and not storage.strip()):
        raise argparse.ArgumentTypeError(f"--baseline {text!r}: expected POLICY or "
                                         "POLICY/STORAGE, e.g. shared/fp32")
    return policy.strip(), parse_storage(storage.strip()) if sep else None


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected numbers separated by commas, e.g. 1e-3,3e-3") from None


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected integers separated by commas, e.g. 0,1,2") from None


def _storage_list(text: str) -> list[str | dict[str, str]]:
    try:
        return [parse_storage(x) for x in text.split(";") if x.strip()]
    except CLIError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_common(p: argparse.ArgumentParser, *, probe: bool = False) -> None:
    p.add_argument("task", nargs="?" if probe else None,
                   help="task name (see `moopt list`) or module.path:ClassName")
    p.add_argument("--preset", help="named preset of the task")
    p.add_argument("--config", type=Path, help="config file (.json, .toml, .yaml)")
    p.add_argument("--policy", help="sharing policy (shared, decoupled, bridged, ...)")
    p.add_argument("--storage", type=parse_storage, help="storage backend or role=name,...")
    p.add_argument("--data-dir", type=Path, help="task data directory (default: embedded data)")
    p.add_argument("--model", type=Path, help="local model checkpoint to start from")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--seed", type=int, help="seed of every random choice of the run")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--cache-dir", type=Path, help="cache of prepared artefacts "
                   "(default: $MOOPT_CACHE_DIR, else ~/.cache/moopt)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the run in --out")
    group.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key (read by the key's type, JSON for "
                   "lists and dicts; dotted keys for dict entries)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (one status line per stage remains)")
    p.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    p.add_argument("--dry-run", action="store_true", help="resolve and check the config, "
                   "print it (and a comparison's grid), and stop before any work")


TASK_HELP = ("`moopt run TASK --help` and `moopt compare TASK --help` add every option of "
             "TASK, with its default and description.")


def build_parser(*, probe: bool = False) -> argparse.ArgumentParser:
    """The ``moopt`` argument parser (``probe``: a silent one that only finds the task)."""
    cls = ProbeParser if probe else argparse.ArgumentParser
    parser = cls(prog="moopt", description="Train one model on several objectives with moopt.",
                 allow_abbrev=False, add_help=not probe)
    if not probe:
        from moopt import __version__

        parser.add_argument("--version", action="version", version=f"moopt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="one training run of a task", allow_abbrev=False,
                         add_help=not probe, epilog=TASK_HELP)
    _add_common(run, probe=probe)
    cmp = sub.add_parser("compare", help="a grid of runs and a comparison report",
                         allow_abbrev=False, add_help=not probe, epilog=TASK_HELP)
    _add_common(cmp, probe=probe)
    cmp.add_argument("--policies", type=_csv, help="comma-separated policies")
    cmp.add_argument("--storages", type=_storage_list,
                     help="storages separated by ';' (each NAME or role=NAME,...)")
    cmp.add_argument("--lrs", type=_float_list, help="e.g. 1e-3,3e-3")
    cmp.add_argument("--seeds", type=_int_list, help="e.g. 0,1,2")
    cmp.add_argument("--baseline", type=parse_baseline, metavar="POLICY[/STORAGE]",
                     help="configuration the report compares every other one with, e.g. "
                     "shared/fp32 (default: the preset's, else the first)")
    cmp.add_argument("--vary", type=parse_axis, action="append", default=[],
                     metavar="FIELD=V1,V2", help="vary a config field across the grid "
                     "(values as JSON or plain strings), e.g. mode=alternating,joint")
    sub.add_parser("list", help="tasks, policies, storages and objectives",
                   add_help=not probe)
    if not probe:  # the probe only looks for run/compare TASK
        for name, command in plugin_commands().items():
            command.add_arguments(sub.add_parser(name, help=command.help, allow_abbrev=False))
    return parser


# --- Plug-in subcommands -----------------------------------------------------------------
# Installed packages (the task adapters among them) contribute subcommands through the
# entry-point group below, so the core CLI imports no task. An entry point names an object
# with ``help`` (one line), ``add_arguments(parser)`` and ``run(args) -> exit status``.
COMMANDS_GROUP = "moopt.commands"
BUILTIN_COMMANDS = ("run", "compare", "list")


def plugin_commands() -> dict[str, Any]:
    """The subcommands of the ``moopt.commands`` entry points, by name (one that fails to
    load is left out with a warning on stderr; none may shadow a built-in command)."""
    from importlib.metadata import entry_points

    found: dict[str, Any] = {}
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        if ep.name in BUILTIN_COMMANDS or ep.name in found:
            continue
        try:
            found[ep.name] = ep.load()
        except Exception as err:  # a broken plug-in must not take the whole CLI down
            print(f"moopt: warning: command {ep.name!r} ({ep.value}) failed to load: {err}",
                  file=sys.stderr)
    return found


def task_options(extra: Sequence[str], config_class: type, task: str) -> dict[str, Any]:
    """Turn leftover ``--some-field VALUE`` tokens into config fields of the task, each value
    read as its field's type reads it (:func:`moopt.runner.fieldtypes.parse_text_value`)."""
    from moopt.runner.fieldtypes import parse_text_value

    fields = config_class.model_fields
    out: dict[str, Any] = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--"):
            raise CLIError(f"unexpected argument {token!r}")
        name, eq, value = token[2:].partition("=")
        key = name.replace("-", "_")
        if key not in fields:
            own = sorted(set(fields) - OWN_FLAG_FIELDS)
            raise CLIError(
                f"unknown option --{name} for task {task!r}; task options: "
                + ", ".join("--" + f.replace("_", "-") for f in own)
                + f" (moopt run {task} --help describes them)"
            )
        if not eq:
            if i + 1 < len(extra) and not extra[i + 1].startswith("--"):
                value = extra[i + 1]
                i += 1
            else:
                value = "true"
        out[key] = parse_text_value(fields[key].annotation, value)
        i += 1
    return out


def _resolve(args: argparse.Namespace, extra: Sequence[str]):
    from moopt.runner.config import resolve_config
    from moopt.runner.discovery import get_task
    from moopt.runner.prechecks import check_directory_path, check_optimizer_settings
    from moopt.runner.run import default_cache_dir

    task = get_task(args.task)
    preset = preset_of(task, args.preset)
    flags = {k: getattr(args, k) for k in COMMON_FLAGS}
    flags["cache_dir"] = args.cache_dir
    if args.no_progress:
        flags["progress"] = False
    flags["task"] = task.name or args.task
    cfg = resolve_config(task.config_class, preset=preset, file=args.config, flags=flags,
                         overrides=args.overrides,
                         options=task_options(extra, task.config_class, task.name))
    check_optimizer_settings(cfg)
    check_directory_path(cfg.out, "--out")
    check_directory_path(cfg.cache_dir or default_cache_dir(),
                         "--cache-dir" if cfg.cache_dir else "$MOOPT_CACHE_DIR")
    from moopt.runner.devices import resolve_hardware

    resolve_hardware(cfg)  # device errors before any output; torchrun's process group
    return task, cfg, preset


def explicit_fields(args: argparse.Namespace, extra: Sequence[str], task: Any) -> set[str]:
    """Config fields the command line sets itself (flags, task options, ``--set``)."""
    names = {k for k in COMMON_FLAGS if getattr(args, k) is not None}
    names |= set(task_options(extra, task.config_class, task.name))
    return names | {o.partition("=")[0].split(".")[0].strip() for o in args.overrides}


def _print_metrics(metrics: dict[str, float]) -> None:
    width = max((len(k) for k in metrics), default=0)
    for key in sorted(metrics):
        print(f"  {key:<{width}}  {metrics[key]:.4g}")


def _print_dry_run(task: Any, cfg: Any, points: list[dict[str, Any]] | None = None) -> int:
    task.check(cfg)
    print(f"dry run of task {task.name!r}" + (f", preset {cfg.preset!r}" if cfg.preset else "")
          + ": the resolved config is valid; nothing was run or written")
    print(json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True))
    if points is not None:
        print(f"grid: {len(points)} runs")
        for point in points:
            print(f"  {point['label']}")
    return 0


def cmd_run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from moopt.runner.run import run_task

    task, cfg, _ = _resolve(args, extra)
    if cfg.out is None and (args.resume or args.overwrite):
        flag = "--resume" if args.resume else "--overwrite"
        raise CLIError(f"{flag} needs --out DIR, the run directory to "
                       f"{'continue' if args.resume else 'replace'} (without --out each run "
                       "gets a new directory under runs/)")
    if args.dry_run:
        return _print_dry_run(task, cfg)
    if cfg.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{task.name}-{cfg.preset or 'custom'}-{stamp}"
        cfg = cfg.model_copy(update={"out": Path("runs") / name})
    result = run_task(task, cfg, resume=args.resume, overwrite=args.overwrite,
                      plots=not args.no_plots)
    from moopt.distributed import is_main_process

    if not is_main_process():
        return 0
    print(f"run finished: {cfg.out}")
    _print_metrics(result.metrics)
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()))
    return 0


def cmd_compare(args: argparse.Namespace, extra: Sequence[str]) -> int:
    from moopt.runner.compare import CompareGrid, run_compare

    task, cfg, preset = _resolve(args, extra)
    if args.out is None and not args.dry_run:
        raise CLIError("moopt compare needs --out DIR")
    spec = dict(preset.get("compare") or {})
    # An axis of the preset whose field the command line sets is held at that value.
    explicit = explicit_fields(args, extra, task)
    axes = {k: [getattr(cfg, k)] for k in spec.get("axes", {}) if k in explicit}
    axes.update(dict(args.vary))
    grid = CompareGrid.from_spec(spec, cfg, policies=args.policies, storages=args.storages,
                                 lrs=args.lrs, seeds=args.seeds, axes=axes,
                                 baseline=args.baseline)
    if args.dry_run:
        return _print_dry_run(task, cfg, grid.points())
    results = run_compare(task, cfg, grid, Path(args.out), resume=args.resume,
                          overwrite=args.overwrite, plots=not args.no_plots)
    from moopt.distributed import is_main_process

    if not is_main_process():
        return 0
    print(f"comparison finished: {args.out}/report.md ({len(results['runs'])} runs)")
    from moopt.runner.claims_report import interval_cell

    x, y = task.tradeoff or (None, None)
    for row in results["aggregates"]:
        vals = ", ".join(
            f"{m} " + interval_cell({"estimate": row[m + "_mean"], "low": row[m + "_low"],
                                     "high": row[m + "_high"], "n": row["n"]})
            for m in (x, y) if m and m + "_mean" in row)
        print(f"  {row['label']}: {vals}")
    return 0


def cmd_list() -> int:
    from moopt.objectives import list_objectives, objective_info
    from moopt.runner.discovery import get_task_class, list_tasks
    from moopt.states import list_policies, list_storages

    print("tasks:")
    for name in list_tasks():
        try:
            cls = get_task_class(name)
            print(f"  {name:<18} {cls.description}  [presets: {preset_summary(cls)}]")
        except Exception as err:  # a broken optional task must not hide the others
            print(f"  {name:<18} (unavailable: {err})")
    print("policies: " + ", ".join(list_policies()))
    print("storages: " + ", ".join(list_storages()))
    print("objectives:")
    for name in list_objectives():
        info = objective_info(name)
        ref = ", needs reference" if info.needs_reference else ""
        print(f"  {name:<8} ({info.role}{ref}) {info.description}")
    return 0


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        found = task_for_help(argv)
    except (MooptError, ImportError) as err:
        print(f"moopt: error: {err}", file=sys.stderr)
        return 2
    if found is not None:
        return print_task_help(argv, found)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "list":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return cmd_list()
    try:
        if args.command == "run":
            return cmd_run(args, extra)
        if args.command == "compare":
            return cmd_compare(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return plugin_commands()[args.command].run(args)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (RunStopped carries the signal)
        signum = getattr(err, "signum", 2)
        how = "interrupted" if signum == 2 else str(err)
        print(f"moopt: {how}; continue with --resume (from the last checkpoint)",
              file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        raise
    except (MooptError, ValueError, TypeError, ImportError, OSError) as err:
        if os.environ.get("MOOPT_DEBUG"):
            raise
        print(f"moopt: error: {err}", file=sys.stderr)
        return 2


# Exit status of a command whose reader went away (``moopt list | head -1``), as the shell
# reports for programs that SIGPIPE stops.
BROKEN_PIPE_STATUS = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``moopt`` console script; returns the exit status."""
    # moopt reads checkpoints and data from local paths only. Hugging Face libraries would
    # still reach the Hub on their own (bitsandbytes asks it about a kernel when imported on
    # CPUs with AVX-512 BF16); offline mode stops that. HF_HUB_OFFLINE=0 in the environment
    # turns it back on.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # The reader stopped reading: leave quietly. Python would flush stdout again at exit
        # and complain, so stdout is pointed at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):  # stdout without a file descriptor (captured)
            pass
        finally:
            os.close(devnull)
        return BROKEN_PIPE_STATUS


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
