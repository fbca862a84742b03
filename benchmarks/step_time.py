"""Optimizer step time and state memory: moopt configurations against torch and bitsandbytes.

    python benchmarks/step_time.py --out runs/bench            # 1M and 8M parameters
    python benchmarks/step_time.py --out runs/bench --large    # adds 64M
    python benchmarks/step_time.py --out runs/bench --sizes 1M-small  # 512 small tensors

Every configuration steps the same float32 tensors with fixed gradients (8 equal tensors, or
512 of 2048 values for "1M-small"; the step alone is timed, not a backward pass), alternating
objectives 1:5 for N = 2 and round-robin for N = 8. Configurations are interleaved: each
repeat builds every optimizer afresh, warms it up, then times ``--steps`` steps; min and
median are over all timed steps of all repeats.
Every timed step is paired with a step of ``torch.optim.AdamW(fused=True)`` on tensors of its
own, taken just before it: a configuration's ratio divides its median by the median of its
partner steps, so both sides of a ratio see the same moments of a noisy host (and the same
caches, which the other optimizer's step has just gone through, as a forward and backward
pass would). ``ratio_to_fused_adamw_row`` in the JSON divides by the "AdamW fused" row instead,
and ``ratio_fast_partner`` takes only the steps whose partner was among the fastest fifth of
that row's partner steps: on a host whose memory bandwidth comes and goes, fused AdamW (bound
by bandwidth) speeds up in quiet moments while a compute-bound step does not, so this is the
ratio a quiet machine would show.
Every moopt configuration runs with its defaults (which, like torch's AdamW, do not look for
NaN/inf gradients); for N = 2 each also runs "checked" (``nonfinite="raise"``: every gradient
read once more before anything is written), the policies in joint mode (both objectives'
gradients every step), "compiled" (``MOOPT_NATIVE=0``: the built-in policies on the
torch.compile'd fused path instead of the native kernels, in both modes), and the example
policy of ``examples/custom_policy.py`` (``shared_v``: compiled, as any registered policy).
Each row records which path stepped it (``kernel_report``) and how long its first step took
(``first_step_ms``: a compiled kernel is built then, unless inductor's disk cache has it).
``--compile-cost`` instead measures the first step of a few configurations in fresh
processes, with empty caches and then again with warm ones.
Writes ``step_time.json`` and ``step_time.png`` (bar chart; needs matplotlib) to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import moopt  # noqa: E402
from moopt.states.fast import compiled, native  # noqa: E402

POLICIES = ("shared", "decoupled", "bridged")
STORAGES = ("fp32", "bf16", "int8", "fp8")
# The compiled path's rows.
COMPILED_STORAGES = ("fp32", "bf16", "int8", "fp8")
# Parameter sets: (tensors, values per tensor). "1M-small" is a model of many small tensors
# (biases, norms, LoRA factors), where per-tensor overhead shows.
SIZES = {"1M": (8, 1 << 17), "8M": (8, 1 << 20), "64M": (8, 1 << 23), "1M-small": (512, 2048)}
EXAMPLE = ROOT / "examples" / "custom_policy.py"
CUSTOM = "shared_v"  # the policy examples/custom_policy.py registers


def register_example_policy() -> None:
    """Run examples/custom_policy.py as a module: it registers ``shared_v``."""
    if CUSTOM not in moopt.list_policies():
        spec = importlib.util.spec_from_file_location("custom_policy", EXAMPLE)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def make_params(size: tuple[int, int], seed: int = 0) -> list[torch.nn.Parameter]:
    """``size`` = (tensors, values per tensor) float32 parameters with fixed gradients."""
    count, per = size
    gen = torch.Generator().manual_seed(seed)
    shape = (per // 1024, 1024) if per % 1024 == 0 else (per,)
    params = []
    for _ in range(count):
        p = torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.02)
        p.grad = torch.randn(shape, generator=gen) * 1e-3
        params.append(p)
    return params


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                total += value.numel() * value.element_size()
    return total


def objective_cycle(n: int) -> list[str]:
    names = [f"o{i}" for i in range(n)]
    if n == 2:
        return ["o0"] + ["o1"] * 5
    return names


Config = tuple[str, dict, Callable[[list[torch.nn.Parameter]], tuple]]


def configurations(n_objectives: list[int], reference: bool) -> list[Config]:
    """(label, description, builder) — the builder returns (optimizer, step function)."""
    configs: list[Config] = []

    def torch_adamw(kind: str):
        def build(params):
            opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), **{kind: True})
            return opt, lambda i: opt.step()
        return build

    configs.append(("AdamW fused", {"family": "torch"}, torch_adamw("fused")))
    configs.append(("AdamW foreach", {"family": "torch"}, torch_adamw("foreach")))
    try:
        # Offline: bitsandbytes asks the Hugging Face Hub about a CPU kernel when imported.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import bitsandbytes as bnb

        for label, cls in (("bnb Adam8bit", bnb.optim.Adam8bit), ("bnb Adam", bnb.optim.Adam)):
            def build(params, cls=cls):
                opt = cls(params, lr=1e-3, betas=(0.9, 0.95))
                return opt, lambda i: opt.step()
            configs.append((label, {"family": "bitsandbytes"}, build))
    except ImportError:
        print("bitsandbytes not installed: its peers are left out", file=sys.stderr)

    def moopt_config(policy: str, storage: str, n: int, path: str, build) -> Config:
        label = f"{policy} {storage} N={n}" + ("" if path == "default" else f" {path}")
        return (label, {"family": "moopt", "policy": policy, "storage": storage, "N": n,
                        "path": path}, build)

    register_example_policy()

    for n in n_objectives:
        for policy in POLICIES:
            for storage in STORAGES:
                configs.append(moopt_config(policy, storage, n, "default",
                                            alternating_builder(policy, storage, n)))
        if n == 2:
            # The same with the non-finite gradient check (nonfinite="raise"): its cost.
            for policy in POLICIES:
                for storage in STORAGES:
                    configs.append(moopt_config(
                        policy, storage, n, "checked",
                        alternating_builder(policy, storage, n, nonfinite="raise")))
            # Joint mode (every objective's gradient in each step; opt.stash_grads + step).
            for policy in POLICIES:
                for storage in ("fp32", "int8", "fp8"):
                    configs.append(moopt_config(policy, storage, n, "joint",
                                                joint_builder(policy, storage, n, fast=True)))
            if reference:
                configs.append(moopt_config("bridged", "fp32", n, "joint reference",
                                            joint_builder("bridged", "fp32", n, fast=False)))
            # The built-in policies on the compiled fused path (what they run where the
            # native kernels do not: GPUs, no C compiler), against their native rows above.
            for policy in POLICIES:
                for storage in COMPILED_STORAGES:
                    configs.append(moopt_config(
                        policy, storage, n, "compiled",
                        alternating_builder(policy, storage, n, native=False)))
                for storage in ("fp32", "int8", "fp8"):
                    configs.append(moopt_config(
                        policy, storage, n, "joint compiled",
                        joint_builder(policy, storage, n, fast=True, native=False)))
            # A registered policy (examples/custom_policy.py): the compiled path.
            for storage in COMPILED_STORAGES:
                configs.append(moopt_config(CUSTOM, storage, n, "default",
                                            alternating_builder(CUSTOM, storage, n)))
            for storage in ("fp32", "int8", "fp8"):
                configs.append(moopt_config(CUSTOM, storage, n, "joint",
                                            joint_builder(CUSTOM, storage, n, fast=True)))
        if reference:
            for policy in POLICIES:
                configs.append(moopt_config(policy, "fp32", n, "reference",
                                            alternating_builder(policy, "fp32", n,
                                                                fast_path=False)))
    return configs


@contextlib.contextmanager
def native_kernels(enabled: bool):
    """``MOOPT_NATIVE=0`` while a configuration without the native kernels steps."""
    saved = os.environ.get("MOOPT_NATIVE")
    if not enabled:
        os.environ["MOOPT_NATIVE"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MOOPT_NATIVE", None)
        else:
            os.environ["MOOPT_NATIVE"] = saved


def without_native(opt, step: Callable[[int], None], native: bool):
    """``step`` run with the native kernels off unless ``native``."""
    if native:
        return opt, step

    def run(i: int) -> None:
        with native_kernels(False):
            step(i)
    return opt, run


def alternating_builder(policy: str, storage: str, n: int, *, native: bool = True,
                        **options):
    """An alternating-mode configuration (objectives as in :func:`objective_cycle`);
    ``options`` go to the optimizer (``nonfinite``, ``fast_path``); ``native=False`` turns
    the native kernels off (the compiled fused path steps)."""
    cycle = objective_cycle(n)

    def build(params):
        opt = moopt.MultiObjectiveOptimizer(params, [f"o{i}" for i in range(n)], policy,
                                            storage, lr=1e-3, **options)
        return without_native(opt, lambda i: opt.step(objective=cycle[i % len(cycle)]),
                              native)
    return build


def joint_builder(policy: str, storage: str, n: int, *, fast: bool, native: bool = True):
    """A joint-mode configuration: objective i's gradient is the parameter's ``.grad`` times
    ``(-0.5)^i`` (made once, outside the timing); each timed step stashes them all and steps."""
    def build(params):
        opt = moopt.MultiObjectiveOptimizer(params, [f"o{i}" for i in range(n)], policy,
                                            storage, lr=1e-3, fast_path=fast)
        own = [p.grad for p in params]
        grads = [[g if i == 0 else g * (-0.5) ** i for g in own] for i in range(n)]

        def step(_):
            for i in range(n):
                for p, g in zip(params, grads[i]):
                    p.grad = g
                opt.stash_grads(f"o{i}")
            opt.step()
            for p, g in zip(params, own):  # the next configuration finds the gradients
                p.grad = g
        return without_native(opt, step, native)
    return build


def time_config(build, params, warmup: int, steps: int,
                partner: Callable[[], None]) -> dict:
    """Step times of one configuration and of the fused-AdamW ``partner`` step taken just
    before each of them (on its own tensors), its state bytes, the duration of its first
    step (kernels are built then: synchronously, before the step) and the paths that
    stepped it."""
    opt, step = build(params)
    start = time.perf_counter()
    step(0)
    first = time.perf_counter() - start
    for i in range(1, warmup):
        step(i)
    times, partner_times = [], []
    for i in range(steps):
        start = time.perf_counter()
        partner()
        middle = time.perf_counter()
        step(warmup + i)
        times.append(time.perf_counter() - middle)
        partner_times.append(middle - start)
    paths = sorted({e["path"] for e in opt.kernel_report()}) if hasattr(
        opt, "kernel_report") else []
    result = {"times": times, "partner_times": partner_times, "bytes": state_bytes(opt),
              "first_step": first, "paths": paths}
    del opt
    return result


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "native_kernels": _native_status()}


def _native_status() -> str:
    """Whether the native CPU kernels were available to the default rows."""
    if native.mode() == "off":
        return "off (MOOPT_NATIVE=0)"
    lib = native.library()
    return f"loaded {lib._name}" if lib is not None else f"unavailable: {native.failure()}"


def run(args: argparse.Namespace) -> dict:
    sizes = [s for s in args.sizes.split(",") if s]
    if args.large and "64M" not in sizes:
        sizes.append("64M")
    n_objectives = [int(n) for n in args.objectives.split(",")]
    configs = configurations(n_objectives, reference=not args.no_reference)
    if args.only:
        keep = [c for c in configs if any(word in c[0] for word in args.only.split(","))]
        configs = keep + [c for c in configs if c[0] == "AdamW fused" and c not in keep]
    results = []
    for size in sizes:
        params = make_params(SIZES[size])
        # The partner: fused AdamW on tensors of its own, stepped right before every timed
        # step of every configuration, so each ratio compares steps taken side by side.
        partner_opt = torch.optim.AdamW(make_params(SIZES[size], seed=1), lr=1e-3,
                                        betas=(0.9, 0.95), fused=True)
        partner_opt.step()
        samples: dict[str, list[float]] = {label: [] for label, _, _ in configs}
        partners: dict[str, list[float]] = {label: [] for label, _, _ in configs}
        memory: dict[str, int] = {}
        first: dict[str, list[float]] = {label: [] for label, _, _ in configs}
        paths: dict[str, list[str]] = {}
        for repeat in range(args.repeats):
            for label, _, build in configs:
                slow = "reference" in label or label.startswith("bnb")
                steps = max(2, args.steps // 3) if slow else args.steps
                got = time_config(build, params, args.warmup, steps, partner_opt.step)
                samples[label].extend(got["times"])
                partners[label].extend(got["partner_times"])
                memory[label] = got["bytes"]
                first[label].append(got["first_step"])
                paths[label] = got["paths"]
                gc.collect()
            print(f"[{size}] repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
        base = statistics.median(samples["AdamW fused"])
        fast = {label: fast_partner_ratio(samples[label], partners[label])
                for label, _, _ in configs}
        numel = SIZES[size][0] * SIZES[size][1]
        for label, info, _ in configs:
            med = statistics.median(samples[label])
            results.append({"size": size, "label": label, **info,
                            "median_ms": med * 1e3, "min_ms": min(samples[label]) * 1e3,
                            "ratio_to_fused_adamw": med / statistics.median(partners[label]),
                            "ratio_to_fused_adamw_row": med / base,
                            "ratio_fast_partner": fast[label],
                            "state_bytes_per_param": memory[label] / numel,
                            "timed_steps": len(samples[label]),
                            # the first repeat's first step: kernels are built then
                            "first_step_ms": first[label][0] * 1e3,
                            "paths": paths[label]})
        del params, partner_opt
        gc.collect()
    return {"machine": machine(), "settings": vars(args), "results": results,
            "compile_seconds": compiled.build_seconds()}


def fast_partner_ratio(times: list[float], partner_times: list[float]) -> float:
    """Median step time over median partner time, over the steps whose partner step was
    among the fastest fifth (at least one step)."""
    pairs = sorted(zip(partner_times, times))[:max(1, len(times) // 5)]
    return statistics.median(t for _, t in pairs) / statistics.median(p for p, _ in pairs)


def print_table(report: dict) -> str:
    lines = [f"{'size':>4} {'configuration':<34} {'median ms':>10} {'min ms':>9} "
             f"{'x fused':>8} {'x quiet':>8} {'B/param':>8} {'1st ms':>9}  path"]
    for r in report["results"]:
        lines.append(f"{r['size']:>4} {r['label']:<34} {r['median_ms']:>10.2f} "
                     f"{r['min_ms']:>9.2f} {r['ratio_to_fused_adamw']:>8.2f} "
                     f"{r.get('ratio_fast_partner', float('nan')):>8.2f} "
                     f"{r['state_bytes_per_param']:>8.2f} {r.get('first_step_ms', 0):>9.1f}"
                     f"  {','.join(r.get('paths', []))}")
    text = "\n".join(lines)
    print(text)
    return text


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install moopt[plots]): no PNG", file=sys.stderr)
        return
    sizes = list(dict.fromkeys(r["size"] for r in report["results"]))
    fig, axes = plt.subplots(len(sizes), 1, figsize=(12, 4.5 * len(sizes)), squeeze=False)
    for ax, size in zip(axes[:, 0], sizes):
        rows = [r for r in report["results"] if r["size"] == size]
        shade = {"reference": "tab:red", "checked": "tab:cyan", "joint": "tab:purple",
                 "joint reference": "tab:red", "compiled": "tab:olive",
                 "joint compiled": "tab:olive"}
        colors = ["tab:gray" if r["family"] != "moopt" else shade.get(r.get("path"), "tab:blue")
                  for r in rows]
        ax.bar(range(len(rows)), [r["ratio_to_fused_adamw"] for r in rows], color=colors)
        ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=75, fontsize=7)
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel("median step time / fused AdamW")
        ax.set_title(f"{size} parameters (8 tensors), {report['machine']['cpu']}, "
                     f"{report['machine']['torch_threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Configurations whose first step builds something: (policy, storage, environment).
FIRST_USE = {
    "shared_v fp32 N=2 (compiled)": (CUSTOM, "fp32", {}),
    "bridged fp32 N=2 (native library)": ("bridged", "fp32", {}),
    "bridged fp32 N=2 compiled": ("bridged", "fp32", {"MOOPT_NATIVE": "0"}),
    "bridged int8 N=2 compiled": ("bridged", "int8", {"MOOPT_NATIVE": "0"}),
}


def first_step(policy: str, storage: str, size: str) -> dict:
    """Seconds of the first and the second alternating step of a fresh optimizer (this
    process has not built anything yet), and the paths they took."""
    register_example_policy()
    params = make_params(SIZES[size])
    opt = moopt.MultiObjectiveOptimizer(params, ["o0", "o1"], policy, storage, lr=1e-3)
    times = []
    for k in ("o0", "o1"):
        start = time.perf_counter()
        opt.step(objective=k)
        times.append(time.perf_counter() - start)
    return {"first_step_s": times[0], "second_step_s": times[1],
            "paths": sorted({e["path"] for e in opt.kernel_report()})}


def compile_cost(size: str) -> dict:
    """The first step of each :data:`FIRST_USE` configuration in a fresh process with empty
    caches (inductor's, triton's, moopt's native library), then in another process with the
    caches the first one filled."""
    rows = {}
    for label, (policy, storage, extra) in FIRST_USE.items():
        with tempfile.TemporaryDirectory() as cache:
            env = {k: v for k, v in os.environ.items()
                   if k not in ("MOOPT_NATIVE", "MOOPT_COMPILE")}
            env.update(extra, MOOPT_CACHE_DIR=f"{cache}/moopt",
                       TORCHINDUCTOR_CACHE_DIR=f"{cache}/inductor",
                       TRITON_CACHE_DIR=f"{cache}/triton")
            row = {}
            for phase in ("cold", "warm"):
                done = subprocess.run(
                    [sys.executable, __file__, "--out", cache, "--first-step", policy, storage,
                     "--sizes", size, "--threads", str(torch.get_num_threads())],
                    env=env, capture_output=True, text=True, timeout=1800)
                if done.returncode != 0:
                    raise RuntimeError(f"{label} ({phase}): {done.stderr[-2000:]}")
                row[phase] = json.loads(done.stdout.strip().splitlines()[-1])
            rows[label] = row
            print(f"{label:<36} first step cold {row['cold']['first_step_s']:7.2f} s, warm "
                  f"{row['warm']['first_step_s']:6.2f} s (second step "
                  f"{row['warm']['second_step_s'] * 1e3:.1f} ms; {row['cold']['paths']})",
                  file=sys.stderr)
    return {"machine": machine(), "size": size, "first_use": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for JSON and PNG")
    parser.add_argument("--sizes", default="1M,8M",
                        help=f"comma list of {', '.join(SIZES)} (1M-small: 512 tensors)")
    parser.add_argument("--large", action="store_true", help="also 64M parameters")
    parser.add_argument("--objectives", default="2,8", help="comma list of N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the per-tensor reference path (slow)")
    parser.add_argument("--only", default="", help="comma list of label substrings")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads for every configuration (default 1: "
                             "stable timings on a shared machine)")
    parser.add_argument("--compile-cost", action="store_true",
                        help="measure first-use build time in fresh processes, empty and "
                             "warm caches (writes compile_cost.json)")
    parser.add_argument("--first-step", nargs=2, metavar=("POLICY", "STORAGE"),
                        help=argparse.SUPPRESS)  # one --compile-cost measurement
    args = parser.parse_args(argv)
    for sz in args.sizes.split(","):
        if sz and sz not in SIZES:
            parser.error(f"unknown size {sz!r}; choose from {', '.join(SIZES)}")
    if args.repeats < 1 or args.steps < 1 or args.warmup < 1:
        parser.error("--repeats, --steps and --warmup must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    size = args.sizes.split(",")[-1]
    if args.first_step:
        print(json.dumps(first_step(*args.first_step, size)))
        return 0
    if args.compile_cost:
        report = compile_cost(size)
        (args.out / "compile_cost.json").write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out / 'compile_cost.json'}", file=sys.stderr)
        return 0
    report = run(args)
    report["table"] = print_table(report)
    settings = dict(report["settings"])
    settings["out"] = str(settings["out"])
    report["settings"] = settings
    (args.out / "step_time.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "step_time.png")
    print(f"wrote {args.out / 'step_time.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
