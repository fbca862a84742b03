"""The default 2-rank job, shared by the test modules of this folder: starting processes
dominates the cost on a small machine, so every default check runs in one job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.distributed import workers
from tests.distributed.harness import run_ranks

STEPS = 4
JOB_TIMEOUT_S = 240.0


def run_job(tmp_path_factory: pytest.TempPathFactory, full: bool) -> tuple[Path, str, float]:
    """Run the whole job; it must end with rank 1's deliberate failure (see workers)."""
    out = tmp_path_factory.mktemp("full" if full else "default")
    start = time.perf_counter()
    try:
        run_ranks(workers.everything, out, STEPS, full,
                  timeout_s=2 * JOB_TIMEOUT_S if full else JOB_TIMEOUT_S)
        error = "the job finished without the deliberate failure"
    except Exception as exc:  # inspected by the tests
        error = f"{type(exc).__name__}: {exc}"
    if not (out / "done-rank0.json").exists():
        pytest.fail(f"the distributed job failed before its end: {error}")
    return out, error, time.perf_counter() - start


@pytest.fixture(scope="session")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    return run_job(tmp_path_factory, full=False)


@pytest.fixture(scope="session")
def job(ran: tuple[Path, str, float]) -> Path:
    return ran[0]
