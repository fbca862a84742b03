"""Markdown of the claims a ``moopt compare`` grid supports (the data comes from
:func:`moopt.runner.claims.build_claims`): one table per metric with every configuration
against the baseline per learning rate and at each one's best learning rate, a trade-off
matrix per configuration (every lr against every lr of the baseline on both trade-off
metrics), a learning-rate sensitivity table, and a storage table (each storage against the
baseline's storage of the same policy).

Cells read ``**better** +0.061 [+0.040, +0.081] 5/5 p=0.062``: the verdict (**better** or
**worse** when the 95 % interval excludes 0, ``~0`` when it covers 0), the mean paired
difference (configuration - baseline) with its interval, the seeds on which the
configuration was better, and the Wilcoxon signed-rank p-value. Metrics without a declared
direction say **higher** / **lower** and count the seeds that went up.

Example:
    >>> from moopt.runner.claims_report import difference_cell, interval_cell
    >>> interval_cell({"estimate": 0.5, "low": 0.4, "high": 0.62, "n": 5})
    '0.5 [0.4, 0.62]'
    >>> interval_cell({"estimate": 0.5, "low": None, "high": None, "n": 1})
    '0.5 (n=1)'
    >>> difference_cell({"estimate": 0.1, "low": 0.05, "high": 0.15, "n": 5, "wins": 5,
    ...                  "losses": 0, "ties": 0, "p_value": 0.0625, "covers_zero": False}, True)
    '**better** +0.1 [+0.05, +0.15] 5/5 p=0.062'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from moopt.runner import stats as S
from moopt.runner.report import markdown_table

COVERS_ZERO = "~0"


def _num(x: float | None, sign: bool = False) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:+.3g}" if sign else f"{x:.3g}"


def interval_cell(iv: Mapping[str, Any] | None) -> str:
    """``estimate [low, high]``; ``estimate (n=1)`` when there is no interval (one seed, or
    a non-finite value: n says how many seeds there were)."""
    if iv is None:
        return "-"
    if iv.get("low") is None or iv.get("high") is None:
        return f"{_num(iv['estimate'])} (n={iv['n']})"
    return f"{_num(iv['estimate'])} [{_num(iv['low'])}, {_num(iv['high'])}]"


def verdict(row: Mapping[str, Any], higher_is_better: bool | None, *,
            lower_is_better_diff: bool = False) -> str:
    """``~0`` when the interval covers 0 (or there is none), else the direction in words.
    ``lower_is_better_diff``: a negative difference is good (spreads)."""
    if row.get("low") is None or row.get("covers_zero", True):
        return COVERS_ZERO
    up = row["estimate"] > 0
    if lower_is_better_diff:
        return "**better**" if not up else "**worse**"
    if higher_is_better is None:
        return "**higher**" if up else "**lower**"
    return "**better**" if up == higher_is_better else "**worse**"


def difference_cell(row: Mapping[str, Any] | None, higher_is_better: bool | None) -> str:
    """Verdict, paired difference with interval, seeds better (or up) of n, p-value."""
    if row is None:
        return "-"
    n = row["n"]
    est = row["estimate"]
    if row.get("low") is not None and abs(est) <= 1e-9 * max(abs(row["low"]), abs(row["high"])):
        # Rounding noise of differences that cancel in decimal (0.1 - 0 + 0.3 - 0.4 leaves
        # -2.8e-17 in binary): shown as the 0 it is at the interval's scale.
        est = 0.0
    diff = _num(est, sign=True)
    if n > 1 and row.get("ties") == n:
        return f"{COVERS_ZERO} identical on {n}/{n} seeds"
    if row.get("low") is None:
        return f"{diff} (n={n}, no interval)"
    good = row["wins"] if higher_is_better in (True, None) else row["losses"]
    count = f"{good}/{n}" + (" up" if higher_is_better is None else "")
    p = f" p={row['p_value']:.2g}" if row.get("p_value") is not None else ""
    return (f"{verdict(row, higher_is_better)} {diff} [{_num(row['low'], True)}, "
            f"{_num(row['high'], True)}] {count}{p}")


def method_note(claims: Mapping[str, Any], n_seeds: int) -> str:
    """How the intervals and tests are made, and what ``n_seeds`` seeds can show."""
    m = claims["method"]
    text = (f"Differences are configuration - baseline on the same seeds: the mean over seeds "
            f"with a {m['level']:.0%} {m['interval']} interval in brackets "
            f"({m['n_resamples']:,} resamples of the seeds, random seed {m['seed']}: the same "
            "runs give the same interval). "
            f"**better** / **worse**: the interval excludes 0; `{COVERS_ZERO}`: it covers 0, "
            "no difference shown. k/n: seeds on which the configuration did better; p: "
            f"{m['test']} on the paired differences.")
    if n_seeds >= 1:
        text += (f" With {n_seeds} seed{'s' if n_seeds != 1 else ''} the smallest p the test "
                 f"can give is {S.min_p_value(n_seeds):.2g}")
        text += ", so it cannot reach 0.05." if S.min_p_value(n_seeds) > 0.05 else "."
    text += (f" The bootstrap sees only these {n_seeds} values per cell: with so few seeds "
             "its interval is narrower than a t-interval and covers less often than its "
             "nominal level; read the intervals as a description of these seeds, and a "
             f"`{COVERS_ZERO}` as \"not shown\", not as \"equal\".")
    return text


def _direction(metric: str, higher_is_better: Mapping[str, bool]) -> bool | None:
    return higher_is_better.get(metric)


def _index(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[tuple[str, Any], Any]:
    return {(r["group"], r.get("lr")): r for r in rows if r["metric"] == metric}


def metric_table(
    claims: Mapping[str, Any],
    aggregates: Sequence[Mapping[str, Any]],
    metric: str,
    higher_is_better: bool | None,
) -> str:
    """Rows: baseline(s) with their means, then every other configuration against its
    baseline; columns: the learning rates and each configuration's best learning rate."""
    per_lr = _index(claims["per_lr"], metric)
    best = {r["group"]: r for r in claims["best_lr"] if r["metric"] == metric}
    lrs = sorted({a["lr"] for a in aggregates})
    groups = list(dict.fromkeys(a["group"] for a in aggregates))
    baselines = list(dict.fromkeys(r["baseline_group"] for r in claims["per_lr"]
                                   if r["metric"] == metric))
    others = list(dict.fromkeys(r["group"] for r in claims["per_lr"] if r["metric"] == metric))
    means = {(a["group"], a["lr"]): a for a in aggregates}
    header = ["configuration"] + [f"lr {lr:g}" for lr in lrs]
    several = len(lrs) > 1
    if several:
        header.append("at its best lr (vs baseline's best)")
    body = []
    for g in [g for g in groups if g in baselines]:
        cells = [_mean_cell(means.get((g, lr)), metric) for lr in lrs]
        row = [f"{g} (baseline)"] + cells
        if several:
            lr = _best_of(means, g, lrs, metric, higher_is_better)
            row.append("-" if lr is None else
                       f"{_mean_cell(means[(g, lr)], metric)} at {lr:g}")
        body.append(row)
    for g in [g for g in groups if g in others]:
        row = [g] + [difference_cell(per_lr.get((g, lr)), higher_is_better) for lr in lrs]
        if several:
            b = best.get(g)
            row.append("-" if b is None else difference_cell(b, higher_is_better)
                       + f" ({b['lr']:g} vs {b['baseline_lr']:g})")
        body.append(row)
    return markdown_table(header, body)


def _mean_cell(agg: Mapping[str, Any] | None, metric: str) -> str:
    if agg is None or metric + "_mean" not in agg:
        return "-"
    return interval_cell({"estimate": agg[metric + "_mean"], "low": agg.get(metric + "_low"),
                          "high": agg.get(metric + "_high"), "n": agg["n"]})


def _best_of(means: Mapping[tuple[str, float], Mapping[str, Any]], group: str,
             lrs: Sequence[float], metric: str, higher_is_better: bool | None) -> float | None:
    vals = [(lr, means[(group, lr)].get(metric + "_mean")) for lr in lrs
            if (group, lr) in means]
    vals = [(lr, v) for lr, v in vals if v is not None and v == v]
    if not vals:
        return None
    sign = -1.0 if higher_is_better is False else 1.0
    return max(vals, key=lambda t: (sign * t[1], -t[0]))[0]


def spread_table(claims: Mapping[str, Any], metrics: Sequence[str]) -> str:
    """Per configuration and metric: the lr spread with its interval and, against the
    baseline, the difference of spreads (negative = less sensitive = better)."""
    rows = [r for r in claims["lr_spread"] if r["metric"] in metrics]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    index = {(r["group"], r["metric"]): r for r in rows}
    header = ["configuration"]
    for m in metrics:
        header += [f"{m} spread", f"{m} spread - baseline's"]
    body = []
    for g in groups:
        line: list[Any] = [g]
        for m in metrics:
            r = index.get((g, m))
            if r is None:
                line += ["-", "-"]
                continue
            line.append(interval_cell(r["spread"]))
            d = r["difference"]
            if d is None:
                line.append("(baseline)" if r["baseline_group"] is None else "-")
            elif d.get("low") is None:
                line.append(f"{_num(d['estimate'], True)} (n={d['n']}, no interval)")
            else:
                line.append(f"{verdict(d, None, lower_is_better_diff=True)} "
                            f"{_num(d['estimate'], True)} [{_num(d['low'], True)}, "
                            f"{_num(d['high'], True)}]")
        body.append(line)
    return markdown_table(header, body)


def storage_table(claims: Mapping[str, Any], metric: str, higher_is_better: bool | None) -> str:
    """Each non-baseline storage against the baseline's storage of the same policy, per lr."""
    rows = [r for r in claims["storage"] if r["metric"] == metric]
    lrs = sorted({r["lr"] for r in rows})
    pairs = list(dict.fromkeys((r["group"], r["reference_group"]) for r in rows))
    index = {(r["group"], r["lr"]): r for r in rows}
    header = ["configuration", "against"] + [f"lr {lr:g}" for lr in lrs]
    body = [[g, ref] + [difference_cell(index.get((g, lr)), higher_is_better) for lr in lrs]
            for g, ref in pairs]
    return markdown_table(header, body)


def _signed_or_covered(row: Mapping[str, Any]) -> str:
    if row.get("low") is None or row.get("covers_zero", True):
        return COVERS_ZERO
    return _num(row["estimate"], sign=True)


def tradeoff_tables(claims: Mapping[str, Any]) -> str:
    """One matrix per configuration: its learning rates (rows) against the baseline's
    (columns), each cell the dominance verdict on both trade-off metrics."""
    rows = claims.get("tradeoff") or []
    if not rows:
        return ""
    x, y = rows[0]["metrics"]
    parts = []
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        base = mine[0]["baseline_group"]
        lrs = sorted({r["lr"] for r in mine})
        base_lrs = sorted({r["baseline_lr"] for r in mine})
        index = {(r["lr"], r["baseline_lr"]): r for r in mine}
        body = []
        for lr in lrs:
            line: list[Any] = [f"{group} lr {lr:g}"]
            for blr in base_lrs:
                r = index.get((lr, blr))
                if r is None:
                    line.append("-")
                    continue
                word = {"dominates": "**dominates**", "dominated": "**dominated**"}.get(
                    r["verdict"], r["verdict"])
                d = r["differences"]
                line.append(f"{word} ({_signed_or_covered(d[x])}, {_signed_or_covered(d[y])})")
            body.append(line)
        parts += [markdown_table([f"{group} vs {base}"] + [f"{base} lr {b:g}" for b in base_lrs],
                                 body), ""]
    return "\n".join(parts)


def claims_markdown(
    claims: Mapping[str, Any],
    aggregates: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    higher_is_better: Mapping[str, bool] | None = None,
) -> str:
    """The claims section of ``report.md`` for ``metrics`` (headings at level 3)."""
    hib = dict(higher_is_better or {})
    if claims.get("baseline") is None:
        return "No baseline: nothing to compare."
    n_seeds = max((a["n"] for a in aggregates), default=0)
    parts = [method_note(claims, n_seeds), ""]
    for m in metrics:
        d = _direction(m, hib)
        word = {True: "higher is better", False: "lower is better", None: "direction not "
                "declared by the task"}[d]
        if not any(r["metric"] == m for r in claims["per_lr"]) and not any(
                r["metric"] == m for r in claims["lr_spread"]):
            continue
        parts += [f"### {m} ({word})", "", metric_table(claims, aggregates, m, d), ""]
    trade = tradeoff_tables(claims)
    if trade:
        x, y = claims["tradeoff"][0]["metrics"]
        parts += [f"### Trade-off: {x} and {y} together", "",
                  "Each configuration at each of its learning rates (rows) against the "
                  "baseline at each of its learning rates (columns), on the same seeds. "
                  "**dominates**: better on both metrics, both intervals excluding 0; "
                  "**dominated**: worse on both; trade: better on one, worse on the other; "
                  f"not shown: an interval covers 0. In brackets the mean differences (Δ{x}, "
                  f"Δ{y}), `{COVERS_ZERO}` where the interval covers 0. A configuration "
                  "with a better trade-off has cells that dominate and none that are "
                  "dominated; a worse one the reverse.", "", trade]
    spread_metrics = [m for m in metrics if any(r["metric"] == m for r in claims["lr_spread"])]
    if spread_metrics:
        parts += ["### Sensitivity to the learning rate", "",
                  "Spread: max - min over the learning rates of the mean over seeds (lower = "
                  "depends less on picking the learning rate), interval from resampling the "
                  "seeds (the same seeds at every lr); noise inflates a spread of means, so "
                  "noisier configurations look more sensitive. Second column: spread minus "
                  "the baseline's on the same seeds; **better** = less sensitive than the "
                  "baseline with an interval that excludes 0.", "",
                  spread_table(claims, spread_metrics), ""]
    storage_metrics = [m for m in metrics if any(r["metric"] == m for r in claims["storage"])]
    if storage_metrics:
        parts += ["### Storage against the baseline's storage of the same policy", "",
                  f"`{COVERS_ZERO}` is consistent with equal results up to the interval's "
                  "width; it does not show equality.", ""]
        for m in storage_metrics:
            parts += [f"{m}:", "", storage_table(claims, m, _direction(m, hib)), ""]
    return "\n".join(parts).rstrip() + "\n"
