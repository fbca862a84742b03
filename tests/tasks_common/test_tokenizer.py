"""train_tokenizer / save_tokenizer / load_tokenizer."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from moopt.tasks.common.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

from .conftest import CORPUS


def test_specials_and_roundtrip(tok):
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == (
        "<pad>",
        "<bos>",
        "<eos>",
        "<unk>",
    )
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert 300 < len(tok) <= 400
    for text in [CORPUS[0], "Unseen wörds, émoji 🙂 and\ttabs"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids  # byte-level: everything is encodable
        assert tok.decode(ids) == text
    # merges were learned: a frequent word is one token, far fewer tokens than bytes
    assert len(tok(CORPUS[0])["input_ids"]) < len(CORPUS[0].encode()) / 2


def test_word_level():
    w = train_tokenizer(["the cat sat", "the dog sat"], vocab_size=50, kind="word")
    ids = w("the bird sat", add_special_tokens=False)["input_ids"]
    assert ids[1] == w.unk_token_id and ids[0] == w.convert_tokens_to_ids("the")
    assert len(w) == 4 + 4  # specials + the, cat, sat, dog


def _hash(t) -> str:
    return hashlib.sha256(t.backend_tokenizer.to_str().encode()).hexdigest()


def test_deterministic_across_processes(tok):
    again = train_tokenizer(CORPUS * 3, vocab_size=400)
    assert _hash(again) == _hash(tok)
    code = (
        "import hashlib, sys; from moopt.tasks.common.tokenizer import train_tokenizer; "
        "from tests.tasks_common.conftest import CORPUS; "
        "t = train_tokenizer(CORPUS * 3, vocab_size=400); "
        "print(hashlib.sha256(t.backend_tokenizer.to_str().encode()).hexdigest())"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == _hash(tok)


def test_save_load_roundtrip(tok, tmp_path):
    path = save_tokenizer(tok, tmp_path / "tok")
    back = load_tokenizer(path)
    assert back(CORPUS[1])["input_ids"] == tok(CORPUS[1])["input_ids"]
    assert (back.pad_token_id, back.bos_token_id, back.eos_token_id) == (0, 1, 2)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be an int >= 260 .* got 100"):
        train_tokenizer(["abc"], vocab_size=100)
    with pytest.raises(ValueError, match="kind must be one of .* got 'char'"):
        train_tokenizer(["abc"], vocab_size=300, kind="char")
    with pytest.raises(ValueError, match="no texts"):
        train_tokenizer([], vocab_size=300)
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        train_tokenizer(["a", 3], vocab_size=300)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no tokenizer"):
        load_tokenizer(tmp_path)
