"""Subcommands contributed through the ``moopt.commands`` entry-point group."""

from __future__ import annotations

import argparse
import importlib.metadata

import pytest

from moopt import cli
from moopt.errors import MooptError


class Echo:
    help = "print the argument"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("word")

    def run(self, args: argparse.Namespace) -> int:
        if args.word == "fail":
            raise MooptError("echo cannot say 'fail'")
        print(f"echo {args.word}")
        return 0


class FakeEntryPoint:
    def __init__(self, name: str, obj: object | None) -> None:
        self.name, self.value, self.obj = name, f"fake:{name}", obj

    def load(self) -> object:
        if self.obj is None:
            raise ImportError("no module named 'fake'")
        return self.obj


@pytest.fixture
def plugins(monkeypatch):
    found = [FakeEntryPoint("echo", Echo()), FakeEntryPoint("broken", None),
             FakeEntryPoint("run", Echo())]

    def entry_points(*, group):
        return found if group == cli.COMMANDS_GROUP else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_plugin_command_runs_and_errors_exit_2(plugins, capsys):
    assert cli.main(["echo", "hi"]) == 0
    out = capsys.readouterr()
    assert out.out == "echo hi\n"
    assert "command 'broken' (fake:broken) failed to load: no module named 'fake'" in out.err
    assert set(cli.plugin_commands()) == {"echo"}  # a plug-in cannot replace `run`
    assert cli.main(["echo", "fail"]) == 2
    assert capsys.readouterr().err.endswith("moopt: error: echo cannot say 'fail'\n")
    with pytest.raises(SystemExit) as stop:
        cli.main(["echo", "hi", "--loud"])
    assert stop.value.code == 2 and "unrecognized arguments: --loud" in capsys.readouterr().err
