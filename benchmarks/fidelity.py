"""Fidelity of low-precision optimizer state: trajectories against float64, fixed gradients.

    python benchmarks/fidelity.py --out runs/fidelity              # 8,192 coordinates, 60 steps
    python benchmarks/fidelity.py --out DIR --size 4096 --steps 12 --seeds 1

Two objectives, ``forget`` and ``retain``, step alternately on a fixed stream of gradients
(the gradients do not depend on the parameters, so every run sees the same stream and the
optimizer state follows the same path whatever the steps were). Per coordinate i each
objective's gradient is ``s_i * (mean_i + noise)``, with a coordinate scale
``s_i = exp(0.5 z_i)`` (``--spread`` sets the 0.5; 8-bit blocks then hold values of
different sizes) and unit noise:

- ``conflict``: forget gradients 3x retain (mean and noise), the forget mean at 120 degrees
  to the retain mean (``-a/2 + sqrt(3)/2 b`` against ``a``, for independent normal a, b;
  ``--conflict-cos`` sets the cosine, -1 for exactly opposed means):
  the bridged second moment ``v_k^ + v_b^`` of retain steps is the difference of forget's
  large base moment and retain's negative residual, the ALGORITHMS.md hazard.
- ``well``: both objectives at the same scale, means at 60 degrees (``a/2 + sqrt(3)/2 b``
  against ``a``).
- ``quiet`` (not run by default): noise only, both objectives at the same scale, coordinate
  scales ``exp(3 z_i)`` (blocks span many decades), and from the middle of the stream on
  every other coordinate's gradient is 1e-4 times smaller: 8-bit storage rounds those
  coordinates' second moments to (nearly) zero while their first moments survive.

Each in the schedules forget:retain 1:5 and 1:1. For every registered sharing policy
(``moopt.list_policies()``) and storage (fp32, bf16, int8, fp8, fp8 with 4 mantissa bits; and,
for bridged, each of them
with ``bridge_guard=0``) it runs moopt (default settings, float32 parameters, the default
fast path) and compares the trajectory with the same policy in float64 (float64 parameters
keep float64 state; ``bridge_guard=0``, i.e. the exact formula):

- the per-coordinate displacement ratio ``|x_T - x_0| / |x64_T - x64_0|``: median, 10th and
  90th percentile over the coordinates (pooled over seeds);
- relative error ``||d - d64|| / ||d64||`` and cosine of the displacement vectors d;
- the largest single step of any coordinate, in units of the learning rate.

The comparison row ``paper fp32`` is the bridged rule written here from the spec in plain
torch float32 (coefficients computed in double, no guard, no clip), the way the papers'
code runs it. The float64 reference is checked against a float64 run of those plain rules
(``float64_check`` in the JSON). Per stream the JSON also records float64's largest step,
the share of its steps above 3 lr, and its largest step where ``|v_k^ + v_b^|`` kept at
least a fifth of ``|v_k^| + |v_b^|`` (where the sum did not cancel).

Writes ``fidelity.json`` and ``fidelity.png`` (needs matplotlib) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import moopt  # noqa: E402
from moopt.states.fp8 import Fp8Storage  # noqa: E402

OBJECTIVES = ("forget", "retain")
STORAGES = ("fp32", "bf16", "int8", "fp8", "fp8 m4")
STREAMS = ("conflict", "well")
EXTRA_STREAMS = ("quiet",)
SCHEDULES = {"1:5": (1, 5), "1:1": (1, 1)}
LR = 1e-3
BETAS = (0.9, 0.95)  # moopt's defaults, for betas and base_betas alike
EPS = 1e-8
SPREAD = 0.5  # standard deviation of log(s_i)
CONFLICT_COS = -0.5  # cosine between the forget and retain means of the conflict stream
QUIET_SPREAD = 3.0  # standard deviation of log(s_i) in the quiet stream
UNCANCELLED = 0.2  # |v_k^ + v_b^| >= this * (|v_k^| + |v_b^|): the sum did not cancel
Stream = list[tuple[str, torch.Tensor]]


def gradient_stream(kind: str, schedule: tuple[int, int], size: int, steps: int,
                    seed: int, *, spread: float = SPREAD,
                    conflict_cos: float = CONFLICT_COS) -> Stream:
    """``steps`` (objective, float64 gradient) pairs of stream ``kind`` (module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    normal = lambda: torch.randn(size, generator=gen, dtype=torch.float64)  # noqa: E731
    scale = torch.exp(spread * normal())
    a, b = normal(), normal()
    sin60 = math.sqrt(3) / 2
    if kind == "conflict":
        sin = math.sqrt(1 - conflict_cos**2)
        means = {"retain": a, "forget": 3 * (conflict_cos * a + sin * b)}
        noise = {"retain": 1.0, "forget": 3.0}
    elif kind == "well":
        means = {"retain": a, "forget": 0.5 * a + sin60 * b}
        noise = {"retain": 1.0, "forget": 1.0}
    elif kind == "quiet":
        scale = torch.exp(QUIET_SPREAD * normal())
        means = {"retain": 0 * a, "forget": 0 * a}
        noise = {"retain": 1.0, "forget": 1.0}
    else:
        raise ValueError(f"unknown stream {kind!r}; streams: "
                         f"{', '.join(STREAMS + EXTRA_STREAMS)}")
    forget, retain = schedule
    order = (["forget"] * forget + ["retain"] * retain) * (steps // (forget + retain) + 1)
    stream = [(k, scale * (means[k] + noise[k] * normal())) for k in order[:steps]]
    if kind == "quiet":
        for _, g in stream[steps // 2:]:
            g[::2] *= 1e-4
    return stream


def storage_of(label: str) -> str | moopt.StorageBackend:
    """The storage a :data:`STORAGES` label names (a registered name, or a configured one)."""
    return Fp8Storage(mantissa_bits=4) if label == "fp8 m4" else label


def moopt_steps(stream: Stream, policy: str, storage: str, dtype: torch.dtype,
                guard: float = 8.0) -> torch.Tensor:
    """Per-step parameter changes (steps x coordinates, float64) of a moopt run."""
    p = torch.nn.Parameter(torch.zeros(stream[0][1].numel(), dtype=dtype))
    opt = moopt.MultiObjectiveOptimizer([p], list(OBJECTIVES), policy, storage_of(storage),
                                        lr=LR, betas=BETAS, base_betas=BETAS, eps=EPS,
                                        bridge_guard=guard)
    steps = []
    for k, g in stream:
        before = p.detach().to(torch.float64, copy=True)
        p.grad = g.to(dtype)
        opt.step(objective=k)
        steps.append(p.detach().double() - before)
    return torch.stack(steps)


class PlainRule:
    """The update rules of ALGORITHMS.md section 2 in plain torch, in ``dtype`` throughout
    (no guard, no clip); coefficients are computed in double and rounded once, as torch
    rounds a Python float multiplying a tensor. For bridged it keeps, per step, the
    direction and the conditioning ``|v_k^ + v_b^| / (|v_k^| + |v_b^|)`` (float64)."""

    def __init__(self, policy: str, size: int, dtype: torch.dtype) -> None:
        if policy not in ("shared", "decoupled", "bridged"):
            raise ValueError(f"no plain rule for policy {policy!r}")
        self.policy, self.dtype = policy, dtype
        zeros = lambda: torch.zeros(size, dtype=dtype)  # noqa: E731
        names = ("",) if policy == "shared" else OBJECTIVES
        self.m = {k: zeros() for k in names}
        self.v = {k: zeros() for k in names}
        self.m_b, self.v_b = zeros(), zeros()
        self.T, self.t = 0, {k: 0 for k in OBJECTIVES}
        self.directions: list[torch.Tensor] = []
        self.conditioning: list[torch.Tensor] = []

    def step(self, objective: str, grad: torch.Tensor) -> torch.Tensor:
        """The parameter change of one step of ``objective``."""
        g = grad.to(self.dtype)
        (b1, b2), (b3, b4) = BETAS, BETAS
        self.T += 1
        self.t[objective] += 1
        key = "" if self.policy == "shared" else objective
        count = self.T if self.policy == "shared" else self.t[objective]
        m, v = self.m[key], self.v[key]
        if self.policy != "bridged":
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            direction = (m / (1 - b1**count)) / ((v / (1 - b2**count)).sqrt() + EPS)
            return -LR * direction
        T = self.T
        mb_hat = self.m_b / (1 - b3 ** (T - 1)) if T > 1 else self.m_b.clone()
        vb_hat = self.v_b / (1 - b4 ** (T - 1)) if T > 1 else self.v_b.clone()
        m.mul_(b1).add_(g - mb_hat, alpha=1 - b1)
        v.mul_(b2).add_(g * g - vb_hat, alpha=1 - b2)
        mk_hat, vk_hat = m / (1 - b1**count), v / (1 - b2**count)
        total = vk_hat + vb_hat
        direction = (mk_hat + mb_hat) / (total.abs().sqrt() + EPS)
        self.m_b.mul_(b3).add_(g, alpha=1 - b3)
        self.v_b.mul_(b4).addcmul_(g, g, value=1 - b4)
        terms = vk_hat.double().abs() + vb_hat.double().abs()
        self.directions.append(direction.double())
        self.conditioning.append(total.double().abs() / terms.clamp_min(1e-300))
        return -LR * direction


def plain_steps(stream: Stream, policy: str, dtype: torch.dtype) -> tuple[torch.Tensor, PlainRule]:
    rule = PlainRule(policy, stream[0][1].numel(), dtype)
    return torch.stack([rule.step(k, g).double() for k, g in stream]), rule


def compare(steps: list[torch.Tensor], reference: list[torch.Tensor]) -> dict[str, float]:
    """Metrics of per-step changes against the float64 ones, pooled over seeds."""
    d = torch.cat([s.sum(0) for s in steps])
    d64 = torch.cat([s.sum(0) for s in reference])
    ratio = d.abs() / d64.abs().clamp_min(1e-300)
    q = torch.quantile(ratio, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {
        "median": q[1].item(), "p10": q[0].item(), "p90": q[2].item(),
        "relative_error": ((d - d64).norm() / d64.norm()).item(),
        "cosine": torch.nn.functional.cosine_similarity(d, d64, dim=0).item(),
        "max_step_lr": max(s.abs().max().item() for s in steps) / LR,
    }


def variants(policy: str) -> list[tuple[str, str, float]]:
    """(label, storage, bridge_guard) of the moopt runs of ``policy``."""
    rows = [(s, s, 8.0) for s in STORAGES]
    if policy == "bridged":
        rows += [(f"{s} guard off", s, 0.0) for s in STORAGES]
    return rows


def run(args: argparse.Namespace) -> dict:
    policies = args.policies.split(",") if args.policies else moopt.list_policies()
    rows, streams, check = [], [], {}
    for kind in args.streams.split(","):
        for sched_name in args.schedules.split(","):
            schedule = SCHEDULES[sched_name]
            per_seed = [gradient_stream(kind, schedule, args.size, args.steps, seed,
                                        spread=args.spread, conflict_cos=args.conflict_cos)
                        for seed in range(args.seeds)]
            info = {"stream": kind, "schedule": sched_name}
            for policy in policies:
                ref = [moopt_steps(s, policy, "fp32", torch.float64, guard=0.0)
                       for s in per_seed]
                if policy in ("shared", "decoupled", "bridged"):
                    plain = [plain_steps(s, policy, torch.float64) for s in per_seed]
                    dev = max(((a - b[0]).abs().max() / b[0].abs().max()).item()
                              for a, b in zip(ref, plain))
                    check[policy] = max(check.get(policy, 0.0), dev)
                    if policy == "bridged":
                        info.update(_float64_profile(ref, [b[1] for b in plain]))
                for label, storage, guard in variants(policy):
                    got = [moopt_steps(s, policy, storage, torch.float32, guard)
                           for s in per_seed]
                    rows.append({"stream": kind, "schedule": sched_name, "policy": policy,
                                 "variant": label, **compare(got, ref)})
                    print(_line(rows[-1]), flush=True)
                if policy == "bridged":
                    got = [plain_steps(s, "bridged", torch.float32)[0] for s in per_seed]
                    rows.append({"stream": kind, "schedule": sched_name, "policy": "bridged",
                                 "variant": "paper fp32", **compare(got, ref)})
                    print(_line(rows[-1]), flush=True)
            streams.append(info)
    return {"settings": {"size": args.size, "steps": args.steps, "seeds": args.seeds,
                         "lr": LR, "betas": BETAS, "eps": EPS, "spread": args.spread,
                         "conflict_cos": args.conflict_cos,
                         "policies": policies},
            "float64_check": {"max_relative_deviation_from_plain_float64": check},
            "streams": streams, "results": rows}


def _float64_profile(ref: list[torch.Tensor], rules: list[PlainRule]) -> dict[str, float]:
    """How large float64 bridged steps get, and where (see the module docstring)."""
    steps = torch.cat([r.abs().flatten() for r in ref]) / LR
    directions = torch.cat([torch.stack(r.directions).abs().flatten() for r in rules])
    kept = torch.cat([torch.stack(r.conditioning).flatten() for r in rules]) >= UNCANCELLED
    return {"float64_max_step_lr": steps.max().item(),
            "float64_share_of_steps_above_3lr": (steps > 3).double().mean().item(),
            "float64_max_direction_where_uncancelled": directions[kept].max().item()}


def _line(row: dict) -> str:
    return (f"{row['stream']:8s} {row['schedule']} {row['policy']:9s} {row['variant']:14s} "
            f"median {row['median']:.3f} (p10 {row['p10']:.3f}, p90 {row['p90']:.3f}) "
            f"rel.err {row['relative_error']:.3g} cos {row['cosine']:.4f} "
            f"max step {row['max_step_lr']:.3g} lr")


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(s["stream"], s["schedule"]) for s in report["streams"]]
    fig, axes = plt.subplots(2, len(panels), figsize=(4.2 * len(panels), 7), squeeze=False,
                             sharey="row")
    for col, (kind, sched) in enumerate(panels):
        rows = [r for r in report["results"] if (r["stream"], r["schedule"]) == (kind, sched)]
        labels = [f"{r['policy']} {r['variant']}" for r in rows]
        x = range(len(rows))
        top, bottom = axes[0][col], axes[1][col]
        top.errorbar(x, [r["median"] for r in rows],
                     yerr=[[r["median"] - r["p10"] for r in rows],
                           [r["p90"] - r["median"] for r in rows]], fmt="o", capsize=3)
        top.axhspan(0.95, 1.05, color="0.85", zorder=0)
        top.set_title(f"{kind} {sched}")
        top.set_ylim(0, 2)
        bottom.bar(x, [r["max_step_lr"] for r in rows], color="C1")
        bottom.axhline(3, color="k", lw=0.8)
        bottom.set_yscale("log")
        bottom.set_xticks(list(x), labels, rotation=90, fontsize=7)
        top.set_xticks(list(x), [""] * len(rows))
    axes[0][0].set_ylabel("|displacement| / float64's\n(median, p10-p90 over coordinates)")
    axes[1][0].set_ylabel("largest step / lr")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for JSON and PNG")
    parser.add_argument("--size", type=int, default=8192, help="coordinates per stream")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--streams", default=",".join(STREAMS),
                        help=f"comma list of {', '.join(STREAMS + EXTRA_STREAMS)}")
    parser.add_argument("--schedules", default=",".join(SCHEDULES),
                        help=f"comma list of {', '.join(SCHEDULES)}")
    parser.add_argument("--spread", type=float, default=SPREAD,
                        help="standard deviation of the log coordinate scales")
    parser.add_argument("--conflict-cos", type=float, default=CONFLICT_COS,
                        help="cosine between forget and retain means in the conflict stream")
    parser.add_argument("--policies", default="",
                        help="comma list of registered policies (default: all)")
    args = parser.parse_args(argv)
    for name, allowed in (("streams", STREAMS + EXTRA_STREAMS), ("schedules", SCHEDULES)):
        for item in getattr(args, name).split(","):
            if item not in allowed:
                parser.error(f"unknown {name[:-1]} {item!r}; choose from {', '.join(allowed)}")
    for policy in filter(None, args.policies.split(",")):
        if policy not in moopt.list_policies():
            parser.error(f"unknown policy {policy!r}; registered: "
                         f"{', '.join(moopt.list_policies())}")
    if args.size < 1 or args.steps < 1 or args.seeds < 1:
        parser.error("--size, --steps and --seeds must be >= 1")
    if not -1 <= args.conflict_cos <= 1 or args.spread < 0:
        parser.error(f"--conflict-cos must be in [-1, 1] and --spread >= 0, got "
                     f"{args.conflict_cos} and {args.spread}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = run(args)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    (args.out / "fidelity.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "fidelity.png")
    print(f"wrote {args.out / 'fidelity.json'} ({report['wall_s']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
