"""`canaryd validate FILE`: OK, or every problem in the config; exit 0 or 2."""

from __future__ import annotations

import argparse

from ..config import ConfigError, load_config
from ..config.promql import promql_problems
from .common import config_problems


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a config file", description=__doc__)
    p.add_argument("file", help="the config file (YAML, config v1)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as e:
        return config_problems(e)
    promql = promql_problems(config)
    if promql:
        return config_problems(ConfigError(promql))
    from ..wiring import start_problems  # the daemon's own start-up checks, no more and no less
    started = start_problems(config)
    if started:
        return config_problems(ConfigError([f"{args.file}: {p}" for p in started]))
    print(f"{args.file}: OK ({len(config.canaries)} canaries, {len(config.alerts)} alert rules)")
    return 0
