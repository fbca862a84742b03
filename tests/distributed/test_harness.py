"""The 2-rank harness tolerates gloo's abort at exit only after every rank's work is done.

torch 2.14's gloo aborts in about 1 of 10 two-rank runs while the process group is torn
down ("terminate called without an active exception"). The workers below make that abort
happen every time (in teardown) or too early (inside the work), so both branches of the
harness are exercised deterministically.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from tests.distributed.harness import read_results, run_ranks, write_result


def abort_in_teardown(rank: int, world: int, out: Path) -> None:
    import torch.distributed as dist

    destroy = dist.destroy_process_group

    def destroy_then_abort(*args, **kwargs):
        destroy(*args, **kwargs)
        os.abort()

    dist.destroy_process_group = destroy_then_abort
    write_result(out, rank, {"rank": rank, "world": world}, "work")


def abort_during_work(rank: int, world: int, out: Path) -> None:
    if rank == 1:
        os.abort()
    write_result(out, rank, {"rank": rank}, "work")


def test_an_abort_in_teardown_after_the_work_is_tolerated(tmp_path: Path) -> None:
    run_ranks(abort_in_teardown, tmp_path, timeout_s=120.0)
    assert read_results(tmp_path, "work") == [{"rank": 0, "world": 2},
                                              {"rank": 1, "world": 2}]


def test_an_abort_before_the_work_is_done_raises(tmp_path: Path) -> None:
    with pytest.raises(mp.ProcessExitedException, match="SIGABRT"):
        run_ranks(abort_during_work, tmp_path, timeout_s=120.0)
