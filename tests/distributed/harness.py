"""Run a function on N gloo ranks from pytest, with a deadline on the whole job.

Each rank initialises a gloo process group with a short collective timeout, runs
``fn(rank, world_size, out_dir, *args)`` and, once ``fn`` has returned, leaves a marker file
of its own (hidden, named after the job) before the process group is torn down. A rank that
raises makes :func:`run_ranks` raise (the other ranks are terminated); a job that outlives
``timeout_s`` is killed and raises :class:`TimeoutError`. torch 2.14's gloo aborts at exit
in about 1 of 10 two-rank runs, without moopt too ("terminate called without an active
exception"): an abort after every rank has left its marker is tolerated, any other failure
raises.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

COLLECTIVE_TIMEOUT_S = 45.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _finished_marker(out_dir: Path, job: str, rank: int) -> Path:
    return out_dir / f".finished-{job}-rank{rank}"


def _entry(rank: int, world_size: int, port: int, fn: Callable[..., Any], out_dir: str,
           job: str, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    try:
        fn(rank, world_size, Path(out_dir), *args)
        # Every rank's work is done and written: what follows is teardown only. The barriers
        # make every marker exist before any rank starts tearing down (an abort there must
        # not find a peer still writing).
        dist.barrier()
        _finished_marker(Path(out_dir), job, rank).touch()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_ranks(fn: Callable[..., Any], out_dir: Path, *args: Any, world_size: int = 2,
              timeout_s: float = 120.0) -> float:
    """Run ``fn`` on ``world_size`` ranks; return the wall time. Raises on failure/timeout;
    tolerates gloo's abort at exit once every rank has finished ``fn``."""
    start = time.perf_counter()
    job = uuid.uuid4().hex
    ctx = mp.start_processes(_entry, args=(world_size, free_port(), fn, str(out_dir), job,
                                           args),
                             nprocs=world_size, join=False, start_method="spawn")
    deadline = start + timeout_s
    try:
        while not ctx.join(timeout=1.0):
            if time.perf_counter() > deadline:
                for proc in ctx.processes:
                    if proc.is_alive():
                        proc.kill()
                raise TimeoutError(f"{getattr(fn, '__name__', fn)} did not finish within "
                                   f"{timeout_s} s on {world_size} ranks")
    except mp.ProcessExitedException as exc:
        finished = all(_finished_marker(out_dir, job, r).is_file() for r in range(world_size))
        if not (finished and "SIGABRT" in str(exc)):
            raise
        # join() terminated the ranks still tearing down; wait for them to be gone.
        for proc in ctx.processes:
            proc.join(timeout=30)
    return time.perf_counter() - start


def run_ranks_to_marker(fn: Callable[..., Any], out_dir: Path, marker: str, *args: Any,
                        world_size: int = 2, timeout_s: float = 120.0) -> None:
    """:func:`run_ranks` for a job whose every rank writes ``<marker>-rank<r>.json`` as its
    last act: an abort in the process-group teardown after that (torch 2.14's gloo aborts
    at exit in about 1 of 10 runs, without moopt too) is tolerated; any other failure, or
    an abort before every marker exists, raises."""
    try:
        run_ranks(fn, out_dir, *args, world_size=world_size, timeout_s=timeout_s)
    except mp.ProcessExitedException as exc:
        done = all((out_dir / f"{marker}-rank{r}.json").is_file() for r in range(world_size))
        if not (done and "SIGABRT" in str(exc)):
            raise


def full_params(model: Any) -> list[Any]:
    """The model's parameters as whole tensors (a DTensor shard gathered from every rank)."""
    out = []
    for p in model.parameters():
        t = p.detach()
        out.append(t.full_tensor() if hasattr(t, "full_tensor") else t)
    return out


def write_result(out_dir: Path, rank: int, data: dict[str, Any], name: str) -> None:
    (out_dir / f"{name}-rank{rank}.json").write_text(json.dumps(data))


def read_results(out_dir: Path, name: str, world_size: int = 2) -> list[dict[str, Any]]:
    """Each rank's results of the part ``name`` of a job."""
    return [json.loads((out_dir / f"{name}-rank{r}.json").read_text())
            for r in range(world_size)]
