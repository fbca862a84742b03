"""A frozen reference model under ``parallel: fsdp`` is sharded over the ranks (each holds
about 1/world of it) and computes what the whole model computes (2 gloo ranks)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.distributed.harness import read_results, run_ranks, write_result

pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(not torch.distributed.is_available()
                                 or not torch.distributed.is_gloo_available(),
                                 reason="torch.distributed with gloo is not available")]
transformers = pytest.importorskip("transformers", reason="needs moopt[llm]")


def _tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64,
                                     n_positions=32, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config).eval()


def sharded_reference(rank: int, world: int, out: Path) -> None:
    from torch.distributed.tensor import DTensor

    from moopt.runner.devices import Hardware
    from moopt.runner.placement import place_frozen

    model = _tiny_gpt2()
    total = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(1 + rank))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    hw = Hardware(torch.device("cpu"), "fp32", "fsdp", rank=rank, world_size=world)
    ref = place_frozen(copy.deepcopy(model), hw)
    local = sum(p.to_local().numel() for p in ref.parameters())
    sharded = all(isinstance(p, DTensor) for p in ref.parameters())
    with torch.no_grad():
        got = ref(input_ids=ids).logits  # each rank its own batch, as in training
        again = ref(input_ids=ids).logits  # resharded after the forward, gathered again
    write_result(out, rank, {
        "total": total, "local": local,
        "frozen": not any(p.requires_grad for p in ref.parameters()),
        "dev": float((got - want).abs().max()), "scale": float(want.abs().max()),
        "repeat": float((again - got).abs().max()),
        "sharded": sharded,
    }, "frozen")


def test_a_frozen_reference_is_sharded_and_computes_the_whole_models_logits(tmp_path):
    run_ranks(sharded_reference, tmp_path, timeout_s=120.0)
    for r in read_results(tmp_path, "frozen"):
        assert r["sharded"] and r["frozen"], r
        assert r["local"] <= r["total"] / 2 + 64 * 32, r  # about half (uneven rows round up)
        assert r["dev"] == 0.0, r  # the gathered weights are the weights: same bits
        assert r["repeat"] == 0.0
