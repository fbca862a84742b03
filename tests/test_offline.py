"""No network in tests or at run time: importing the optional Hugging Face stack (as the
tests, the benchmark and ``moopt`` do) opens no connection and resolves no host name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Records every host-name lookup and connection, then imports what the suite imports.
PROBE = """
import socket, sys
calls = []
real_lookup, real_connect = socket.getaddrinfo, socket.socket.connect
def lookup(*a, **k):
    calls.append(("getaddrinfo", a[0]))
    return real_lookup(*a, **k)
def connect(self, address):
    calls.append(("connect", address))
    return real_connect(self, address)
socket.getaddrinfo, socket.socket.connect = lookup, connect
for name in sys.argv[1:]:
    try:
        __import__(name)
    except ImportError:
        pass
print(calls)
"""
MODULES = ["bitsandbytes", "transformers", "moopt.cli"]


def _network_calls(env: dict[str, str]) -> list:
    done = subprocess.run([sys.executable, "-c", PROBE, *MODULES], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return eval(done.stdout.strip().splitlines()[-1])  # a list literal printed by PROBE


def test_the_suite_runs_hugging_face_libraries_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert _network_calls(dict(os.environ)) == []


def test_the_moopt_command_sets_offline_mode(monkeypatch):
    from moopt.cli import main

    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(SystemExit):
        main(["--version"])
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's own setting wins
    with pytest.raises(SystemExit):
        main(["--version"])
    assert os.environ["HF_HUB_OFFLINE"] == "0"


@pytest.mark.skipif(sys.platform != "linux", reason="the probe's expectation is Linux's")
def test_the_probe_sees_a_lookup():
    """The probe itself catches network use: a plain host-name lookup is recorded."""
    code = PROBE.replace("for name in sys.argv[1:]:", "try:\n    socket.getaddrinfo("
                         "'localhost', 80)\nexcept OSError:\n    pass\nfor name in []:")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert "getaddrinfo" in done.stdout, done.stderr
