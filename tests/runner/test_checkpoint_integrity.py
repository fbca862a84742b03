"""Checkpoints of the runner: verified against their manifest, loaded without running code,
and never replaced by a new one that did not reach the disk intact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from moopt.cli import main
from moopt.integrity import CheckpointError, sha256_file
from moopt.runner import checkpoint as ckpt
from moopt.runner.run import run_task
from tests.runner.toy_task import ToyConfig, ToyTask

TOY = "tests.runner.toy_task:ToyTask"


def _cfg(out: Path, **kw) -> ToyConfig:
    """The toy task's default preset with 8 steps and a checkpoint every 2 (what _cli runs)."""
    base = {**ToyTask.presets["tiny"], "preset": "tiny", "steps": 8, "checkpoint_every": 2,
            "out": out, "cache_dir": out.parent / "cache"}
    base.pop("compare")
    base.update(kw)
    return ToyConfig(**base)


def _cli(out: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()  # earlier runs' status lines ("toy: training (4 steps)") are not ours
    code = main(["run", TOY, "--out", str(out), "--resume", "--steps", "8", "--set",
                 "checkpoint_every=2", "--cache-dir", str(out.parent / "cache"), "--no-plots"])
    return code, capsys.readouterr().err


def _stopped_run(tmp_path: Path, name: str = "run") -> Path:
    out = tmp_path / name
    run_task(ToyTask(), _cfg(out), stop_after=4, plots=False)
    assert ckpt.checkpoint_step(out) == 4
    return out


def _state_file(out: Path) -> Path:
    return out / ckpt.read_manifest(out)["folder"] / ckpt.STATE_NAME


def _resume(out: Path):
    return run_task(ToyTask(), _cfg(out), resume=True, plots=False)


def _forge_manifest(out: Path) -> None:
    """Rewrite the manifest to match the files as they are now (what an attacker who can
    write into the run directory could do)."""
    manifest = ckpt.read_manifest(out)
    folder = out / manifest["folder"]
    manifest["files"] = {name: {"size": os.path.getsize(folder / name),
                                "sha256": sha256_file(folder / name)}
                         for name in manifest["files"]}
    (out / ckpt.MANIFEST_NAME).write_text(json.dumps(manifest))


class _CreatesAFile:
    """Unpickling this calls ``open(target, "w")``: a crafted checkpoint's payload."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_layout_and_manifest(tmp_path):
    out = _stopped_run(tmp_path)
    manifest = json.loads((out / "checkpoint.json").read_text())
    assert manifest["step"] == 4 and manifest["folder"].startswith("checkpoints/00000004-")
    entry = manifest["files"]["state.pt"]
    assert entry["size"] == _state_file(out).stat().st_size > 0
    # Only the current checkpoint's folder is kept (the step-2 one was deleted).
    assert [p.name for p in (out / "checkpoints").iterdir()] == [manifest["folder"][12:]]


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, capsys):
    out = _stopped_run(tmp_path)
    target = tmp_path / "created-by-the-checkpoint"
    payload = torch.load(_state_file(out), weights_only=False)  # the real one, this test's own
    payload["rng"]["evil"] = _CreatesAFile(target)
    torch.save(payload, _state_file(out))
    _forge_manifest(out)
    with pytest.raises(CheckpointError, match=r"state\.pt: refused: it references open"):
        _resume(out)
    assert not target.exists()
    # Through the command line: one line, exit status 2, still nothing created.
    code, err = _cli(out, capsys)
    assert code == 2 and err.count("\n") == 1 and "refused: it references open" in err, err
    assert not target.exists()


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped", "empty", "missing"])
def test_damaged_state_file_is_named_and_nothing_loads(tmp_path, capsys, damage):
    out = _stopped_run(tmp_path)
    path = _state_file(out)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
        want = r"state\.pt: truncated: \d+ bytes, the manifest says \d+"
    elif damage == "bit-flipped":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        path.write_bytes(bytes(flipped))
        want = r"state\.pt: damaged: its SHA-256 differs from the manifest"
    elif damage == "empty":
        path.write_bytes(b"")
        want = r"state\.pt: empty: 0 bytes"
    else:
        path.unlink()
        want = r"state\.pt: missing"
    with pytest.raises(CheckpointError, match=want):
        _resume(out)
    history = (out / "history.jsonl").read_text()
    code, err = _cli(out, capsys)
    assert code == 2 and err.count("\n") == 1 and str(path) in err, err
    assert (out / "history.jsonl").read_text() == history  # the run directory is untouched


def test_damaged_or_foreign_manifest(tmp_path):
    out = _stopped_run(tmp_path)
    (out / "checkpoint.json").write_text('{"format": 1, "step": 4,')
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: damaged: not JSON"):
        _resume(out)
    (out / "checkpoint.json").write_text('{"format": 7}')
    with pytest.raises(CheckpointError, match=r"not a checkpoint manifest of format 1"):
        _resume(out)
    (out / "checkpoint.json").write_text(json.dumps(
        {"format": 1, "step": 4, "folder": "../elsewhere", "files": {}}))
    with pytest.raises(CheckpointError, match=r"bad folder entry '../elsewhere'"):
        _resume(out)


def test_a_checkpoint_of_an_older_moopt_is_not_loaded(tmp_path):
    out = _stopped_run(tmp_path)
    payload = ckpt.load_checkpoint(out)
    (out / "checkpoint.json").unlink()
    torch.save(payload, out / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt: written by an older moopt"):
        _resume(out)


def test_the_step_inside_must_match_the_manifest(tmp_path):
    out = _stopped_run(tmp_path)
    payload = ckpt.load_checkpoint(out)
    payload["step"] = 6
    torch.save(payload, _state_file(out))
    _forge_manifest(out)
    with pytest.raises(CheckpointError, match=r"holds step 6, the manifest says 4"):
        _resume(out)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    out = _stopped_run(tmp_path)
    before = ckpt.read_manifest(out)
    good = ckpt.load_checkpoint(out)

    def crash(obj, f, *args, **kwargs):  # the disk fills up half way
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        ckpt.save_checkpoint(out, {"step": 6}, step=6)
    monkeypatch.undo()
    assert ckpt.read_manifest(out) == before
    assert [p.name for p in (out / "checkpoints").iterdir()] == [before["folder"][12:]]
    assert torch.equal(ckpt.load_checkpoint(out)["model"]["1.weight"],
                       good["model"]["1.weight"])


def test_a_write_that_does_not_read_back_is_refused(tmp_path, monkeypatch):
    out = _stopped_run(tmp_path)
    before = ckpt.read_manifest(out)
    real = ckpt.write_state

    def corrupting(folder, payload):  # the bytes on disk differ from the ones written
        entry = real(folder, payload)
        path = Path(folder) / ckpt.STATE_NAME
        data = bytearray(path.read_bytes())
        data[100] ^= 1
        path.write_bytes(bytes(data))
        return entry

    monkeypatch.setattr(ckpt, "write_state", corrupting)
    with pytest.raises(CheckpointError, match="damaged: its SHA-256 differs"):
        ckpt.save_checkpoint(out, ckpt.load_checkpoint(out), step=4)
    assert ckpt.read_manifest(out) == before
    ckpt.verify_checkpoint(out)


def test_numpy_state_of_a_task_loads_through_the_allow_list(tmp_path):
    import numpy as np

    run = tmp_path / "r"
    payload = {"step": 1, "arr": np.arange(3, dtype=np.float32), "scalar": np.float64(2.5),
               "rng": ckpt.capture_rng()}
    ckpt.save_checkpoint(run, payload, step=1)
    back = ckpt.load_checkpoint(run)
    assert back["arr"].tolist() == [0.0, 1.0, 2.0] and back["scalar"] == 2.5
    ckpt.restore_rng(back["rng"])
