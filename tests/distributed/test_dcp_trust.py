"""Sharded (DCP) checkpoints in one process: the manifest is checked before anything is
read, and crafted metadata runs no code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

import moopt
from moopt import distributed as mdist
from moopt.integrity import CheckpointError, sha256_file
from tests.distributed import workers


class _CreatesAFile:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def _saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, moopt.MultiObjectiveOptimizer]:
    model = workers.make_model()
    opt = workers.make_opt(model, "bridged", "fp32")
    workers.train(model, opt, range(2), "alternating", 0, 1)
    path = tmp_path / "ckpt"
    mdist.save_checkpoint(path, model, opt, extra={"step": 2})
    return path, model, opt


def _fresh() -> tuple[torch.nn.Module, moopt.MultiObjectiveOptimizer]:
    model = workers.make_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    return model, workers.make_opt(model, "bridged", "fp32")


def _snapshot(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_manifest_lists_every_file(tmp_path):
    path, model, _ = _saved(tmp_path)
    manifest = json.loads((path / mdist.MANIFEST_NAME).read_text())
    on_disk = sorted(p.name for p in path.iterdir() if p.name != mdist.MANIFEST_NAME)
    assert sorted(manifest["files"]) == on_disk and ".metadata" in on_disk
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(path / name)
    other, opt = _fresh()
    assert mdist.load_checkpoint(path, other, opt) == {"step": 2}
    assert all(torch.equal(a, b) for a, b in zip(_snapshot(other), _snapshot(model)))


def test_crafted_metadata_is_refused_and_creates_nothing(tmp_path):
    path, _, _ = _saved(tmp_path)
    target = tmp_path / "created-by-the-metadata"
    (path / ".metadata").write_bytes(pickle.dumps(_CreatesAFile(target)))
    model, opt = _fresh()
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match=r"\.metadata: truncated: \d+ bytes, the manifest"):
        mdist.load_checkpoint(path, model, opt)
    # Even with a manifest forged to match, the metadata reader builds nothing but DCP's
    # own records.
    manifest = json.loads((path / mdist.MANIFEST_NAME).read_text())
    manifest["files"][".metadata"] = {"size": (path / ".metadata").stat().st_size,
                                      "sha256": sha256_file(path / ".metadata")}
    (path / mdist.MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"\.metadata: refused: it references open"):
        mdist.load_checkpoint(path, model, opt)
    assert not target.exists()
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(model))) and not opt.state


@pytest.mark.parametrize("damage", ["truncated shard", "no manifest", "flipped metadata"])
def test_damaged_directories_are_named(tmp_path, damage):
    path, _, _ = _saved(tmp_path)
    if damage == "truncated shard":
        shard = next(path.glob("__0_*.distcp"))
        shard.write_bytes(shard.read_bytes()[:100])
        want = rf"{shard.name}: truncated: 100 bytes"
    elif damage == "no manifest":
        (path / mdist.MANIFEST_NAME).unlink()
        want = r"moopt-manifest\.json: missing: .* has no manifest"
    else:
        data = bytearray((path / ".metadata").read_bytes())
        data[-5] ^= 0x01
        (path / ".metadata").write_bytes(bytes(data))
        want = r"\.metadata: damaged"
    model, opt = _fresh()
    with pytest.raises(CheckpointError, match=want):
        mdist.load_checkpoint(path, model, opt)
    assert not opt.state
