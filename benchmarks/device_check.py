"""``make device-check``: the checks that need a CUDA device, in one command.

1. The tests marked ``cuda`` (``pytest -m cuda``): the optimizer step on CUDA equals the
   CPU step for every policy and storage, joint and alternating; the runner on CUDA.
2. A short step-time benchmark on the device: every policy with fp32, int8 and fp8 state
   (N = 2 objectives, alternating) against ``torch.optim.AdamW(fused=True)`` on tensors
   of the same size, each timed step paired with an AdamW step just before it (CUDA
   events, medians), and the ratio of the medians.
3. One smoke run per registered task: ``moopt run TASK --preset smoke --device cuda
   --precision bf16-mixed``; it must finish with finite metrics on the CUDA device.

Everything lands in ``OUT/summary.json`` (default ``runs/device-check``), with the pytest
report, each smoke run's directory and the benchmark rows. Exit status 0 when everything
passed. On a machine without CUDA it says so and exits 0 without doing anything.

    python benchmarks/device_check.py [--out DIR] [--tasks a,b] [--skip-tests]
                                      [--skip-bench] [--skip-smoke] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def cuda_missing_message() -> str:
    return (f"device-check: no CUDA device is visible (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda}); nothing to check here. Run it on a machine with a GPU.")


# ----------------------------------------------------------------------------- tests
def run_cuda_tests(out: Path, timeout_s: float) -> dict[str, Any]:
    """``pytest -m cuda`` in a subprocess; counts from its JUnit report."""
    report = out / "cuda-tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
           f"--junitxml={report}", "tests"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-4000:]
    except subprocess.TimeoutExpired:
        rc, tail = None, f"timed out after {timeout_s} s"
    counts: dict[str, int] = {}
    if report.is_file():
        suite = ET.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    ok = rc == 0 and bool(counts) and counts["tests"] > counts["skipped"]
    return {"ok": ok, "returncode": rc, "counts": counts,
            "seconds": round(time.perf_counter() - start, 1), "output_tail": tail}


# ----------------------------------------------------------------------------- benchmark
def _timed(fn: Any) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def bench_steps(numel: int = 16 * 2**20, steps: int = 20, warmup: int = 5) -> list[dict]:
    """Step time per policy x storage against fused AdamW on tensors of its own (paired)."""
    import moopt

    device = torch.device("cuda")
    shapes = [(numel // 4 // 1024, 1024)] * 4

    def tensors() -> list[torch.nn.Parameter]:
        gen = torch.Generator(device=device).manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, device=device, generator=gen)) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, device=device, generator=gen) * 1e-3
        return ps

    ref_params = tensors()
    adamw = torch.optim.AdamW(ref_params, lr=1e-4, fused=True)
    rows = []
    for policy in moopt.list_policies():
        for storage in ("fp32", "int8", "fp8"):
            if storage not in moopt.list_storages():
                continue
            params = tensors()
            opt = moopt.MultiObjectiveOptimizer(params, objectives=["forget", "retain"],
                                                policy=policy, storage=storage, lr=1e-4)
            ours, theirs = [], []
            for i in range(warmup + steps):
                name = "forget" if i % 6 == 0 else "retain"  # the papers' 1:5 schedule
                t_ref = _timed(adamw.step)
                t_ours = _timed(lambda name=name, opt=opt: opt.step(objective=name))
                if i >= warmup:
                    theirs.append(t_ref)
                    ours.append(t_ours)
            rows.append({"policy": policy, "storage": storage, "numel": numel,
                         "ms": round(_median(ours), 3), "adamw_fused_ms": round(
                             _median(theirs), 3),
                         "ratio": round(_median(ours) / _median(theirs), 3)})
            del opt, params
            torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- smoke runs
def _finite(metrics: dict[str, Any]) -> bool:
    return bool(metrics) and all(isinstance(v, (int, float)) and math.isfinite(v)
                                 for v in metrics.values())


def smoke_run(task: str, out: Path, timeout_s: float, cache_dir: Path, *,
              preset: str = "smoke", device: str = "cuda") -> dict[str, Any]:
    """``moopt run TASK --preset smoke --device cuda --precision bf16-mixed``; ok when it
    finished on that device with finite metrics."""
    run_dir = out / f"smoke-{task.replace(':', '-')}"
    cmd = [sys.executable, "-m", "moopt", "run", task, "--preset", preset, "--device", device,
           "--precision", "bf16-mixed", "--out", str(run_dir), "--overwrite", "--no-progress",
           "--no-plots", "--cache-dir", str(cache_dir)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-2000:]
    except subprocess.TimeoutExpired:
        rc, tail = None, f"timed out after {timeout_s} s"
    result: dict[str, Any] = {"task": task, "returncode": rc,
                              "seconds": round(time.perf_counter() - start, 1),
                              "command": " ".join(cmd[1:]), "output_tail": tail}
    try:
        run = json.loads((run_dir / "run.json").read_text())
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        run, metrics = {}, {}
    hardware = run.get("hardware", {})
    result.update(status=run.get("status"), hardware=hardware, metrics=metrics)
    result["ok"] = (rc == 0 and run.get("status") == "finished" and _finite(metrics)
                    and str(hardware.get("device", "")).startswith(device))
    return result


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/device-check"))
    parser.add_argument("--tasks", default="", help="comma list (default: every task)")
    parser.add_argument("--skip-tests", action="store_true")
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--skip-smoke", action="store_true")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds per step (the test run, each smoke run)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(cuda_missing_message())
        return 0
    from moopt.runner.discovery import list_tasks

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": os.uname().nodename,
    }
    if not args.skip_tests:
        print("device-check: pytest -m cuda ...", flush=True)
        summary["tests"] = run_cuda_tests(out, args.timeout)
    if not args.skip_bench:
        print("device-check: step-time benchmark ...", flush=True)
        summary["benchmark"] = bench_steps()
    if not args.skip_smoke:
        tasks = [t for t in args.tasks.split(",") if t] or list_tasks()
        summary["smoke"] = []
        for task in tasks:
            print(f"device-check: smoke run of {task} ...", flush=True)
            summary["smoke"].append(smoke_run(task, out, args.timeout, out / "cache"))
    checks = [summary["tests"]["ok"]] if "tests" in summary else []
    checks += [s["ok"] for s in summary.get("smoke", [])]
    summary["ok"] = all(checks)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for row in summary.get("benchmark", []):
        print(f"  {row['policy']:>9} {row['storage']:>4}: {row['ms']:.2f} ms, "
              f"{row['ratio']:.2f}x fused AdamW ({row['adamw_fused_ms']:.2f} ms)")
    if "tests" in summary:
        print(f"  cuda tests: {summary['tests']['counts']} (ok: {summary['tests']['ok']})")
    for s in summary.get("smoke", []):
        print(f"  smoke {s['task']}: {'ok' if s['ok'] else 'FAILED'} ({s['seconds']} s)")
    print(f"device-check: {'passed' if summary['ok'] else 'FAILED'}; {out / 'summary.json'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
