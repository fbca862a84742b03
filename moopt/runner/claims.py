"""Which claims of a ``moopt compare`` grid hold: every configuration against a baseline
configuration on the same seeds, per learning rate, at each one's best learning rate, in
learning-rate sensitivity, and each storage against the baseline's storage of the same
policy (int8 against fp32, say).

:func:`build_claims` computes everything for every metric (JSON-able, saved in
``results.json`` under ``"claims"``); :func:`claims_markdown` renders the tables of
chosen metrics for ``report.md``. The statistics are those of :mod:`moopt.runner.stats`.

A configuration is a (policy, storage, extra axis values) triple; it is compared with the
baseline's policy and storage at the *same* extra axis values (``joint`` against
``joint``), so an axis never stands in for the policy.

Example:
    >>> from moopt.runner.claims import build_claims
    >>> runs = [{"policy": p, "storage": "fp32", "axes": {}, "group": f"{p}-fp32", "lr": 0.1,
    ...          "seed": s, "metrics": {"acc": base + 0.01 * s}}
    ...         for p, base in (("shared", 0.5), ("bridged", 0.6)) for s in range(5)]
    >>> claims = build_claims(runs, baseline=("shared", "fp32"))
    >>> row = claims["per_lr"][0]
    >>> row["group"], round(row["estimate"], 3), row["covers_zero"], row["wins"]
    ('bridged-fp32', 0.1, False, 5)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from moopt.runner import stats as S

AxisValues = tuple[tuple[str, str], ...]
ConfigKey = tuple[str, str, AxisValues]


def _storage_label(storage: str | dict[str, str]) -> str:
    if isinstance(storage, dict):
        return "+".join(f"{k}={v}" for k, v in sorted(storage.items()))
    return storage


def config_key(run: Mapping[str, Any]) -> ConfigKey:
    """(policy, storage label, extra axis values) of a run or an aggregate row."""
    axes = tuple(sorted((k, repr(v)) for k, v in (run.get("axes") or {}).items()))
    return run["policy"], _storage_label(run["storage"]), axes


class _Cells:
    """Runs indexed by configuration, learning rate and seed: ``value(key, lr, metric)``
    gives ``{seed: value}``."""

    def __init__(self, runs: Sequence[Mapping[str, Any]]) -> None:
        self.groups: dict[ConfigKey, str] = {}
        self.lrs: dict[ConfigKey, list[float]] = {}
        self.cells: dict[tuple[ConfigKey, float], dict[int, Mapping[str, float]]] = {}
        for r in runs:
            key = config_key(r)
            self.groups.setdefault(key, r["group"])
            lrs = self.lrs.setdefault(key, [])
            if r["lr"] not in lrs:
                lrs.append(r["lr"])
            self.cells.setdefault((key, r["lr"]), {})[int(r["seed"])] = r["metrics"]
        for lrs in self.lrs.values():
            lrs.sort()

    def values(self, key: ConfigKey, lr: float, metric: str) -> dict[int, float]:
        cell = self.cells.get((key, lr), {})
        return {s: float(m[metric]) for s, m in cell.items() if metric in m}

    def mean(self, key: ConfigKey, lr: float, metric: str) -> float | None:
        vals = list(self.values(key, lr, metric).values())
        return sum(vals) / len(vals) if vals else None

    def best_lr(self, key: ConfigKey, metric: str, higher_is_better: bool) -> float | None:
        """The learning rate with the best mean (the smallest such lr on a tie)."""
        means = [(lr, self.mean(key, lr, metric)) for lr in self.lrs[key]]
        means = [(lr, m) for lr, m in means if m is not None and m == m]  # drop NaN
        if not means:
            return None
        sign = 1.0 if higher_is_better else -1.0
        return max(means, key=lambda t: (sign * t[1], -t[0]))[0]

    def table(self, key: ConfigKey, metric: str, seeds: Sequence[int]) -> list[list[float]]:
        """seeds x lrs values of ``metric`` (every seed must have every lr)."""
        cols = [self.values(key, lr, metric) for lr in self.lrs[key]]
        return [[col[s] for col in cols] for s in seeds]

    def full_seeds(self, key: ConfigKey, metric: str) -> set[int]:
        """Seeds with a value of ``metric`` at every learning rate of ``key``."""
        sets = [set(self.values(key, lr, metric)) for lr in self.lrs[key]]
        return set.intersection(*sets) if sets else set()


def _paired(cells: _Cells, base: ConfigKey, base_lr: float, other: ConfigKey, other_lr: float,
            metric: str) -> dict[str, Any] | None:
    a, b = cells.values(base, base_lr, metric), cells.values(other, other_lr, metric)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    cmp = S.paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return {**cmp.as_dict(), "seeds": seeds}


def resolve_baseline(
    runs: Sequence[Mapping[str, Any]], baseline: tuple[str, str | dict[str, str]] | None
) -> tuple[str, str] | None:
    """The baseline's (policy, storage label): ``baseline`` if given, else the first run's."""
    if baseline is not None:
        return baseline[0], _storage_label(baseline[1])
    if not runs:
        return None
    return runs[0]["policy"], _storage_label(runs[0]["storage"])


def build_claims(
    runs: Sequence[Mapping[str, Any]],
    *,
    baseline: tuple[str, str | dict[str, str]] | None = None,
    metrics: Sequence[str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    tradeoff: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Paired comparisons of a grid's runs (see the module docstring).

    ``runs``: dicts with ``policy``, ``storage``, ``axes``, ``group``, ``lr``, ``seed``
    and ``metrics`` (as ``run_compare`` collects them). ``baseline``: (policy, storage),
    default the first run's. ``metrics``: default every metric all runs have.
    ``higher_is_better``: per metric (default True); it picks each configuration's best
    learning rate and says which way "better" is. ``tradeoff``: two metrics judged
    together (``"tradeoff"`` entries: every learning rate of a configuration against every
    learning rate of the baseline, see :func:`dominance`). Differences are always
    ``configuration - baseline``.
    """
    hib = dict(higher_is_better or {})
    base = resolve_baseline(runs, baseline)
    out: dict[str, Any] = {
        "baseline": None, "per_lr": [], "best_lr": [], "lr_spread": [], "storage": [],
        "tradeoff": [],
        "method": {"interval": f"{S.METHOD}-bootstrap", "level": S.LEVEL,
                   "n_resamples": S.N_RESAMPLES, "seed": S.SEED,
                   "test": "Wilcoxon signed-rank, two-sided (scipy.stats.wilcoxon)"},
    }
    if base is None:
        return out
    if metrics is None:
        names = [set(r["metrics"]) for r in runs]
        metrics = sorted(set.intersection(*names)) if names else []
    cells = _Cells(runs)
    keys = list(cells.groups)
    base_keys = {k[2]: k for k in keys if k[:2] == base}
    if not base_keys:
        known = sorted({f"{k[0]}/{k[1]}" for k in keys})
        raise ValueError(f"baseline {base[0]}/{base[1]} is not a configuration of the grid; "
                         f"configurations: {', '.join(known)}")
    out["baseline"] = f"{base[0]}-{base[1]}"
    for metric in metrics:
        better_high = hib.get(metric, True)
        for key in keys:
            ref = base_keys.get(key[2])
            if ref is not None and key != ref:
                _against(out, cells, ref, key, metric, better_high)
            _storage(out, cells, (key[0], base[1], key[2]), key, metric)
            _spread(out, cells, ref, key, metric)
    if tradeoff is not None and all(m in metrics for m in tradeoff):
        _tradeoff(out, cells, keys, base_keys, tradeoff, hib)
    return out


def dominance(x: Mapping[str, Any], y: Mapping[str, Any], x_higher: bool = True,
              y_higher: bool = True) -> str:
    """Verdict on two paired comparisons (``as_dict`` of
    :class:`~moopt.runner.stats.PairedComparison`) of one pair of runs: ``"dominates"``
    when both are better with intervals that exclude 0, ``"dominated"`` when both are
    worse, ``"trade"`` when one is better and the other worse, else ``"not shown"``.

    >>> better = {"estimate": 0.1, "low": 0.05, "high": 0.2, "covers_zero": False}
    >>> dominance(better, better), dominance(better, better, y_higher=False)
    ('dominates', 'trade')
    """
    def sign(row: Mapping[str, Any], higher: bool) -> int:
        if row.get("low") is None or row.get("covers_zero", True):
            return 0
        return 1 if (row["estimate"] > 0) == higher else -1

    sx, sy = sign(x, x_higher), sign(y, y_higher)
    if sx == sy == 1:
        return "dominates"
    if sx == sy == -1:
        return "dominated"
    if sx * sy == -1:
        return "trade"
    return "not shown"


def _tradeoff(out: dict[str, Any], cells: _Cells, keys: list[ConfigKey],
              base_keys: dict[AxisValues, ConfigKey], pair: tuple[str, str],
              hib: Mapping[str, bool]) -> None:
    """Every (configuration, lr) against every (baseline, lr) on both metrics of ``pair``:
    a better trade-off shows as cells that dominate the baseline at some learning rate."""
    x, y = pair
    for key in keys:
        ref = base_keys.get(key[2])
        if ref is None or key == ref:
            continue
        for lr in cells.lrs[key]:
            for ref_lr in cells.lrs[ref]:
                cx = _paired(cells, ref, ref_lr, key, lr, x)
                cy = _paired(cells, ref, ref_lr, key, lr, y)
                if cx is None or cy is None:
                    continue
                out["tradeoff"].append({
                    "group": cells.groups[key], "lr": lr, "baseline_group": cells.groups[ref],
                    "baseline_lr": ref_lr, "metrics": [x, y],
                    "differences": {x: cx, y: cy},
                    "verdict": dominance(cx, cy, hib.get(x, True), hib.get(y, True))})


def _against(out: dict[str, Any], cells: _Cells, ref: ConfigKey, key: ConfigKey, metric: str,
             better_high: bool) -> None:
    """``key`` against ``ref`` at every shared learning rate and at each one's best."""
    group, ref_group = cells.groups[key], cells.groups[ref]
    for lr in cells.lrs[key]:
        if lr in cells.lrs[ref]:
            row = _paired(cells, ref, lr, key, lr, metric)
            if row:
                out["per_lr"].append({"metric": metric, "group": group,
                                      "baseline_group": ref_group, "lr": lr, **row})
    best, ref_best = cells.best_lr(key, metric, better_high), cells.best_lr(ref, metric,
                                                                            better_high)
    if best is not None and ref_best is not None:
        row = _paired(cells, ref, ref_best, key, best, metric)
        if row:
            out["best_lr"].append({"metric": metric, "group": group, "lr": best,
                                   "baseline_group": ref_group, "baseline_lr": ref_best, **row})


def _storage(out: dict[str, Any], cells: _Cells, ref: ConfigKey, key: ConfigKey,
             metric: str) -> None:
    """``key`` against ``ref``, the same policy and axes in the baseline's storage, per lr
    (nothing when ``key`` already has that storage or the grid lacks ``ref``)."""
    if key == ref or ref not in cells.groups:
        return
    for lr in cells.lrs[key]:
        row = _paired(cells, ref, lr, key, lr, metric) if lr in cells.lrs[ref] else None
        if row:
            out["storage"].append({"metric": metric, "group": cells.groups[key],
                                   "reference_group": cells.groups[ref], "lr": lr, **row})


def _spread(out: dict[str, Any], cells: _Cells, ref: ConfigKey | None, key: ConfigKey,
            metric: str) -> None:
    """Learning-rate spread of ``key`` and, against ``ref``, the difference of spreads."""
    if len(cells.lrs[key]) < 2:
        return
    seeds = sorted(cells.full_seeds(key, metric))
    if not seeds:
        return
    row: dict[str, Any] = {
        "metric": metric, "group": cells.groups[key], "lrs": cells.lrs[key], "seeds": seeds,
        "spread": S.spread_interval(cells.table(key, metric, seeds)).as_dict(),
        "baseline_group": None, "difference": None}
    if ref is not None and ref != key and cells.lrs[ref] == cells.lrs[key]:
        common = sorted(set(seeds) & cells.full_seeds(ref, metric))
        if common:
            diff = S.paired_spread_difference(cells.table(ref, metric, common),
                                              cells.table(key, metric, common))
            row["baseline_group"] = cells.groups[ref]
            row["difference"] = {**diff.as_dict(), "covers_zero": diff.covers(0.0),
                                 "seeds": common}
    out["lr_spread"].append(row)
