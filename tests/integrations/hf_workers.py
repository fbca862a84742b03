"""Rank function for the slow HF Trainer + DDP test (see test_hf_ddp.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tests.distributed.harness import write_result
from tests.integrations import test_hf_trainer as hf


class Rows(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def datasets() -> dict[str, Rows]:
    g = torch.Generator().manual_seed(1)
    return {"forget": Rows(torch.randint(0, 32, (8, 8), generator=g)),
            "retain": Rows(torch.randint(0, 32, (12, 8), generator=g))}


def train_params(out: Path, world: int, steps: int = 4) -> tuple[list[torch.Tensor], Any]:
    """Float64 tiny GPT-2, global micro-batch of 4 split over the ranks."""
    from moopt.integrations.hf import MultiObjectiveTrainer

    args = hf.args(out, steps, per_device_train_batch_size=4 // world,
                   ddp_backend="gloo" if world > 1 else None)
    trainer = MultiObjectiveTrainer(model=hf.tiny_model().double(), args=args,
                                    objective_data=datasets(), data_collator=collate,
                                    schedule=hf.SCHEDULE, loss_fns=hf.LOSSES,
                                    optimizer_kwargs={"policy": "bridged"})
    trainer.train()
    return [p.detach().clone() for p in trainer.model.parameters()], trainer


def ddp_rank(rank: int, world: int, out: Path) -> None:
    os.environ.setdefault("LOCAL_RANK", str(rank))
    params, trainer = train_params(out / f"trainer-{rank}", world)
    if rank == 0:
        torch.save(params, out / "ddp-params.pt")
    write_result(out, rank, {"objectives": trainer.objective_log,
                             "wrapped": type(trainer.model_wrapped).__name__}, "hf")
