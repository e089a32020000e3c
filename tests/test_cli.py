"""The command line's own habits (issue 25): help that formats, usage errors from the
subcommand that was mistyped, refusals of settings that cannot be honoured."""

from __future__ import annotations

import argparse

import pytest

from radynversion import cli


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_every_subcommand_is_listed():
    assert {"synth", "import-radyn", "train", "evaluate", "invert", "plot", "verify", "demo"} <= set(_subcommands())


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_formats(flag, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([flag])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: radynversion")
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("name", _subcommands())
def test_every_subcommand_help_formats(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: radynversion {name}")
