"""`canaryd run --config FILE`: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..config import ConfigError, load_config
from ..daemon import Daemon, run_daemon
from ..logs import setup_logging
from .common import EXIT_USAGE, config_problems


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the daemon", description=__doc__)
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="the config file (YAML, config v1)")
    p.add_argument("--log-format", choices=("json", "text"), default="json", help="json lines (default) or text")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        return config_problems(e)
    setup_logging(args.log_format, args.log_level)
    try:
        asyncio.run(run_daemon(Daemon(config=config, config_path=args.config)))
    except OSError as e:  # the listen address is taken, a token file is unreadable, ...
        print(f"canaryd run: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"canaryd run: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0
