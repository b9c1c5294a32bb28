"""Commands from other distributions: found through the `canaryd.commands` entry points, never imported
by name; a documented one that is not installed still shows in --help and says how to install it."""

from __future__ import annotations

import argparse
from importlib.metadata import EntryPoint
from types import SimpleNamespace

import pytest

from canaryd import cli
from canaryd.commands import plugins


def _with_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: EntryPoint) -> None:
    monkeypatch.setattr(plugins, "entry_points", lambda group: [e for e in eps if e.group == group])


def test_a_missing_demo_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _with_entry_points(monkeypatch)
    for argv in (["demo"], ["demo", "--help"], ["demo", "--scenario", "bad"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pip install ./demo" in err, err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["validate", "x.yaml", "--bogus"])  # other commands still refuse unknown arguments
    assert exit_.value.code == 2


def test_an_installed_command_is_registered_from_its_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    def register(sub: argparse._SubParsersAction) -> None:
        p = sub.add_parser("demo", help="the real one")
        p.add_argument("--scenario")
        p.set_defaults(handler=lambda args: 7 if args.scenario == "bad" else 0)

    ep = EntryPoint(name="demo", value="fake_demo", group=plugins.GROUP)
    monkeypatch.setattr(EntryPoint, "load", lambda self: SimpleNamespace(register=register))
    _with_entry_points(monkeypatch, ep)
    assert cli.main(["demo", "--scenario", "bad"]) == 7


def test_a_broken_add_on_does_not_take_the_other_commands_down(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    ep = EntryPoint(name="demo", value="no_such_module_for_canaryd", group=plugins.GROUP)
    _with_entry_points(monkeypatch, ep)
    assert cli.main(["demo"]) == 2
    assert "cannot load no_such_module_for_canaryd: ModuleNotFoundError" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
