"""Stage-1 cache entries: temporary folders of dead builders are removed, live ones kept."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from moopt.tasks.common.cache import new_temp_entry, publish_entry, remove_orphans


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_orphans_of_dead_builders_are_removed(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f"abc.tmp-{host}-{_dead_pid()}-1"
    live = tmp_path / f"abc.tmp-{host}-{os.getpid()}-2"
    foreign = tmp_path / "abc.tmp-otherhost-1-3"
    legacy_old = tmp_path / "abc.tmp-1700000000000000000"  # older moopt: no host or pid
    legacy_new = tmp_path / "def.tmp-1800000000000000000"
    for folder in (dead, live, foreign, legacy_old, legacy_new):
        folder.mkdir()
        (folder / "model.bin").write_text("partial")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(legacy_old, (day_ago, day_ago))
    entry = tmp_path / "abc"
    tmp = new_temp_entry(entry)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, foreign.name, legacy_new.name, tmp.name])
    assert tmp.name.startswith(f"abc.tmp-{host}-{os.getpid()}-")
    publish_entry(tmp, entry, {"k": 1})
    assert (entry / "info.json").is_file() and not tmp.exists()
    assert remove_orphans(tmp_path) == []  # the live builder's folder stays
    assert live.is_dir()
