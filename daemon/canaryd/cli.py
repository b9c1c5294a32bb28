"""The `canaryd` command: one sub-command per module in commands/, plus those of installed add-ons."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .commands import COMMANDS
from .commands.common import EXIT_USAGE
from .commands.plugins import register_plugins


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canaryd",
        description="Automated canary analysis: judge a canary against stable, move traffic, roll back.",
    )
    parser.add_argument("--version", action="version", version=f"canaryd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    register_plugins(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # parse_args, except that a stand-in for a missing add-on takes any arguments (see commands/plugins.py)
    args, extra = parser.parse_known_args(argv)  # argparse exits 2 on usage errors, as the contract says
    if extra and not getattr(args, "takes_any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # the last line of defence: a message, never a traceback
        print(f"canaryd {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
