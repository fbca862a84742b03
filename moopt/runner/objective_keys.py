"""The config keys that name objectives (``schedule``, ``weights``, ``lr_ratios``), checked
against the objectives a run trains.

Checked twice: before anything is built or written, for tasks that know their objectives
from the config alone (:meth:`moopt.runner.task.TaskAdapter.objective_names`), so a typo
fails in ``--dry-run`` and before an expensive stage 1; and against the built task's
objectives, for every task.

Example:
    >>> from moopt.runner.config import RunConfig
    >>> cfg = RunConfig(schedule={"forgot": 1, "retain": 5})
    >>> try:
    ...     check_objective_keys(cfg, ["forget", "retain"])
    ... except ValueError as err:
    ...     print(str(err).split("(")[1])
    unknown: ['forgot'], missing: ['forget'])
"""

from __future__ import annotations

from collections.abc import Sequence

from moopt.runner.config import ConfigError, RunConfig


def check_objective_keys(cfg: RunConfig, names: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming the key and the bad names when ``cfg``'s
    ``schedule`` (a frequency per objective) does not cover exactly ``names``, or when
    ``weights`` / ``lr_ratios`` name an objective that is not among them."""
    names = list(names)
    spec = cfg.schedule
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(names))
        missing = sorted(set(names) - set(spec))
        if unknown or missing:
            raise ConfigError(
                f"config key 'schedule' {spec} must give a frequency for exactly the "
                f"objectives {names} (unknown: {unknown}, missing: {missing})"
            )
    for key, mapping in (("lr_ratios", cfg.lr_ratios), ("weights", cfg.weights or {})):
        unknown = sorted(set(mapping or {}) - set(names))
        if unknown:
            raise ConfigError(
                f"config key {key!r} names unknown objective(s) {unknown}; objectives: {names}"
            )
