"""The ``kiln`` command: every stage of dvc.yaml and every tool behind one name, each with --help."""
from __future__ import annotations

import configparser
import importlib
import re

import pytest
import yaml

from stages.tools import cli
from tests.conftest import REPO


def test_console_script_is_the_cli():
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    lines = [line.split("=", 1) for line in setup["options.entry_points"]["console_scripts"].splitlines() if line]
    scripts = {name.strip(): target.strip() for name, target in lines}
    module, _, attr = scripts["kiln"].partition(":")
    assert getattr(importlib.import_module(module), attr) is cli.main


def test_every_dvc_stage_has_a_command():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    cmds = [s.get("cmd") or s["do"]["cmd"] for s in stages.values()]
    modules = {re.match(r"python -m (\S+)", cmd).group(1) for cmd in cmds}
    assert modules <= {m.removesuffix(".__main__") for m in cli.COMMANDS.values()}
    for name in ("serve", "generate", "classify"):
        assert cli.COMMANDS[name] == f"stages.tools.{name}"


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_command_has_help(command, capsys):
    assert callable(importlib.import_module(cli.COMMANDS[command]).main)
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: kiln {command}")


def test_help_lists_the_commands_and_unknown_ones_exit_2(capsys):
    cli.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: kiln {" + ",".join(cli.COMMANDS) + "}")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fetch"])
    assert exit_.value.code == 2
    assert "unknown command 'fetch'" in capsys.readouterr().err
