"""Sub-commands from other distributions, found through the entry-point group `canaryd.commands`.

An entry point names an object (usually a module) with `register(subparsers)`, like the modules in
commands/, so canaryd never imports them by name. `canaryd demo` comes this way from the demo
(demo/ in the repository, distribution canaryd-demo). A documented command whose distribution is not
installed still appears in `canaryd --help`; running it says, in one line, how to install it (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from .common import EXIT_USAGE

GROUP = "canaryd.commands"

# Commands of canaryd's documented interface that another distribution provides: name -> (help, install).
OPTIONAL: dict[str, tuple[str, str]] = {
    "demo": ("show the whole system working on loopback", "pip install ./demo"),
}


def register_plugins(sub: argparse._SubParsersAction) -> None:
    """Every installed `canaryd.commands` entry point, then a stand-in for each OPTIONAL one missing."""
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in sub.choices:
            continue  # a built-in command or an earlier entry point keeps the name
        _register_one(sub, ep)
    for name, (help_text, install) in OPTIONAL.items():
        if name not in sub.choices:
            _stand_in(sub, name, f"{help_text} (not installed: {install})",
                      f"not installed; install it from canaryd's repository with: {install}")


def _register_one(sub: argparse._SubParsersAction, ep: EntryPoint) -> None:
    try:
        ep.load().register(sub)
    except Exception as e:  # noqa: BLE001 - a broken add-on must not take the other commands down
        if ep.name not in sub.choices:
            help_text = OPTIONAL.get(ep.name, (f"from {ep.value}",))[0]
            _stand_in(sub, ep.name, f"{help_text} (broken install)",
                      f"cannot load {ep.value}: {type(e).__name__}: {e}")


def _stand_in(sub: argparse._SubParsersAction, name: str, help_text: str, message: str) -> None:
    # No -h of its own and any arguments accepted (cli.main lets them through): `canaryd demo --help`
    # then says what is missing, not how to call what is not there.
    p = sub.add_parser(name, help=help_text, add_help=False)
    p.set_defaults(handler=_unavailable(name, message), takes_any_arguments=True)


def _unavailable(name: str, message: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        print(f"canaryd {name}: {message}", file=sys.stderr)
        return EXIT_USAGE

    return handler
