"""Quality of low-bit optimizer state: final losses of bf16 / int8 runs against fp32.

Two 2-objective regression toys, trained for ``--steps`` alternating steps (schedule 1:5,
objective ``a`` at half the learning rate, weight decay 0.01), for every sharing policy:

- ``conflict``: one 64x64 linear map pulled towards two different targets (the toy of
  tests/states/test_lowbit_policies.py): the objectives cannot both be met.
- ``multitask``: a shared linear trunk (64 -> 64) with one linear head (64 -> 8) per
  objective, on targets a teacher of the same shape produced (plus noise): both can be met.

Per toy, policy and seed it trains the fp32 run, the same run in float64 (the exact
arithmetic), the fp32 run from initial weights perturbed by a relative 1e-6 (how far rounding
alone moves the end point), and the bf16 and int8 runs: ``int8`` as configured by default
(tensors under 4,096 values stay fp32: here the 64x64 weights are quantized, biases and heads
are not), ``int8 all`` (``min_size=0``: every tensor quantized), ``fp8 all`` (the 8-bit
minifloat code, every tensor quantized) and ``fp8 m4 all`` (the same with 4 mantissa bits).
It prints and saves (JSON, PNG) each final loss as a ratio to the fp32 run's. The first two
ratios are the band within which a low-bit run cannot be told apart from fp32 by a single
run.

    python benchmarks/quality.py --out runs/quality            # 5 seeds, 500 steps
    python benchmarks/quality.py --out DIR --seeds 2 --steps 100 --toys conflict
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import moopt
from moopt.states.fp8 import Fp8Storage
from moopt.states.int8 import Int8Storage

POLICIES = ("shared", "decoupled", "bridged")
VARIANTS = ("float64", "fp32 perturbed", "bf16", "int8", "int8 all", "fp8 all", "fp8 m4 all")
Problem = tuple[nn.Module, torch.Tensor, dict[str, torch.Tensor]]


def conflict_toy(seed: int) -> Problem:
    """One linear map, two targets that differ by a random linear map (test_lowbit_policies)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 64, generator=gen)
    w_a = torch.randn(64, 64, generator=gen) / 8
    w_b = w_a + torch.randn(64, 64, generator=gen) / 16
    torch.manual_seed(seed)
    return _Split(nn.Linear(64, 64), heads=False), x, {"a": x @ w_a.T, "b": x @ w_b.T}


def multitask_toy(seed: int) -> Problem:
    """A shared linear trunk and two heads; a teacher of the same shape made the targets."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 64, generator=gen)
    trunk = x @ (torch.randn(64, 64, generator=gen) / 8).T
    targets = {k: trunk @ (torch.randn(8, 64, generator=gen) / 8).T
               + 0.05 * torch.randn(512, 8, generator=gen) for k in ("a", "b")}
    torch.manual_seed(seed)
    return _Split(nn.Linear(64, 64), heads=True), x, targets


class _Split(nn.Module):
    """``body(x)`` for both objectives, or ``body`` as a trunk with one head per objective."""

    def __init__(self, body: nn.Module, heads: bool) -> None:
        super().__init__()
        self.body = body
        self.heads = nn.ModuleDict({k: nn.Linear(64, 8) for k in "ab"}) if heads else None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.body(x)
        if self.heads is None:
            return {"a": h, "b": h}
        return {k: head(h) for k, head in self.heads.items()}


TOYS: dict[str, Callable[[int], Problem]] = {"conflict": conflict_toy,
                                             "multitask": multitask_toy}


def final_loss(toy: str, policy: str, variant: str, seed: int, steps: int) -> float:
    """Sum of both objectives' losses after ``steps`` alternating steps."""
    model, x, targets = TOYS[toy](seed)
    dtype = torch.float64 if variant == "float64" else torch.float32
    model, x = model.to(dtype), x.to(dtype)
    targets = {k: t.to(dtype) for k, t in targets.items()}
    if variant == "fp32 perturbed":
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1 + 1e-6)
    storage = {"bf16": "bf16", "int8": "int8", "int8 all": Int8Storage(min_size=0),
               "fp8 all": Fp8Storage(min_size=0),
               "fp8 m4 all": Fp8Storage(min_size=0, mantissa_bits=4)}.get(variant, "fp32")
    opt = moopt.MultiObjectiveOptimizer(model.parameters(), ["a", "b"], policy, storage,
                                        lr=3e-3, weight_decay=0.01, lr_ratios={"a": 0.5})
    names = iter(moopt.schedules.Alternating({"a": 1, "b": 5}))
    for _ in range(steps):
        k = next(names)
        (model(x)[k] - targets[k]).pow(2).mean().backward()
        opt.step(objective=k)
        opt.zero_grad()
    with torch.no_grad():
        out = model(x)
        return sum(float((out[k] - t).pow(2).mean()) for k, t in targets.items())


def run(args: argparse.Namespace) -> dict:
    rows = []
    for toy in args.toys.split(","):
        for policy in POLICIES:
            per_seed = []
            for seed in range(args.seeds):
                base = final_loss(toy, policy, "fp32", seed, args.steps)
                ratios = {v: final_loss(toy, policy, v, seed, args.steps) / base
                          for v in VARIANTS}
                per_seed.append({"seed": seed, "fp32": base, "ratio": ratios})
            summary = {v: {"median": statistics.median(s["ratio"][v] for s in per_seed),
                           "min": min(s["ratio"][v] for s in per_seed),
                           "max": max(s["ratio"][v] for s in per_seed)} for v in VARIANTS}
            rows.append({"toy": toy, "policy": policy, "seeds": per_seed, "summary": summary})
            print(_line(rows[-1]), flush=True)
    return {"settings": {"steps": args.steps, "seeds": args.seeds, "toys": args.toys},
            "results": rows}


def _line(row: dict) -> str:
    cells = [f"{v} {s['median']:.3f} ({s['min']:.3f}-{s['max']:.3f})"
             for v, s in row["summary"].items()]
    return f"{row['toy']:9s} {row['policy']:9s} " + " | ".join(cells)


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(VARIANTS)
    for j, v in enumerate(VARIANTS):
        for i, row in enumerate(rows):
            s = row["summary"][v]
            ax.errorbar(i + (j - (len(VARIANTS) - 1) / 2) * width, s["median"],
                        yerr=[[s["median"] - s["min"]], [s["max"] - s["median"]]],
                        fmt="o", color=f"C{j}", label=v if i == 0 else None, capsize=3)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhspan(0.98, 1.02, color="0.9", zorder=0, label="fp32 +- 2%")
    ax.set_xticks(range(len(rows)), [f"{r['toy']}\n{r['policy']}" for r in rows])
    ax.set_ylabel("final loss / fp32 run's (median, min-max over seeds)")
    ax.legend(fontsize=8, ncols=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for JSON and PNG")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--toys", default="conflict,multitask",
                        help=f"comma list of {', '.join(TOYS)}")
    args = parser.parse_args(argv)
    for toy in args.toys.split(","):
        if toy not in TOYS:
            parser.error(f"unknown toy {toy!r}; choose from {', '.join(TOYS)}")
    if args.steps < 1 or args.seeds < 1:
        parser.error("--steps and --seeds must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = run(args)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    (args.out / "quality.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "quality.png")
    print(f"wrote {args.out / 'quality.json'} ({report['wall_s']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
