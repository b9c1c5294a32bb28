"""`canaryd demo` (and `canaryd-demo`): the whole system on loopback in under 3 minutes, with real
Prometheus and Alertmanager.

Scenario "good": a healthy canary walks every step and is promoted. Scenario "bad": the canary starts
failing; canaryd's analysis and the CanaryHighErrorRate alert race to roll it back.

Exit codes: 0 every scenario ended as expected (good → promoted, bad → rolled back), 1 otherwise,
2 Prometheus or Alertmanager is not installed (or rules/ is missing), 130/143 interrupted before the end.
Ctrl-C or SIGTERM stops every process the demo started.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .runner import Demo
from .servers import missing_binaries
from .settings import DEFAULT, FAST, DemoError, find_rules
from .watch import WatchError

INSTALL = "sudo apt-get install -y prometheus prometheus-alertmanager"
EXIT_USAGE = 2


def register(sub: argparse._SubParsersAction) -> None:
    """`canaryd demo`: canaryd finds this through the entry-point group `canaryd.commands`."""
    p = sub.add_parser("demo", help="show the whole system working on loopback", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    """The `canaryd-demo` console script: the same command on its own."""
    p = argparse.ArgumentParser(prog="canaryd-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except KeyboardInterrupt:
        return 130


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", choices=("good", "bad", "both"), default="both",
                   help="which scenario to run (default both: good, then bad)")
    p.add_argument("--keep-running", action="store_true",
                   help="after the scenarios, leave everything up (with traffic) until Ctrl-C")
    p.add_argument("--fast", action="store_true",
                   help=f"shorter steps ({FAST.step_duration:g} s instead of {DEFAULT.step_duration:g} s), for CI; "
                        "the alert keeps its real timing")
    p.add_argument("--rules", metavar="DIR", help="the rules/ directory (default: the repository's)")
    p.add_argument("--workdir", metavar="DIR",
                   help="where configs, logs and Prometheus' data go (default: a new temporary directory)")


def _fail(message: str) -> int:
    """A usage or set-up error: one line on stderr, exit 2."""
    print(f"canaryd demo: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    missing = missing_binaries()
    if missing:
        return _fail(f"{' and '.join(missing)} not installed; install them with:\n  {INSTALL}")
    try:
        rules = find_rules(args.rules)
    except DemoError as e:
        return _fail(str(e))
    try:
        workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="canaryd-demo-"))
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _fail(f"{args.workdir}: cannot create the work directory: {e.strerror or e}")
    scenarios = ["good", "bad"] if args.scenario == "both" else [args.scenario]
    demo = Demo(FAST if args.fast else DEFAULT, scenarios=scenarios, rules=rules, workdir=workdir,
                out=lambda line: print(line, flush=True), keep_running=args.keep_running)
    return asyncio.run(_main(demo))


async def _main(demo: Demo) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    caught: list[int] = []

    def on_signal(sig: signal.Signals) -> None:
        if caught:
            return  # the clean-up is already running; a second Ctrl-C must not cut it short
        caught.append(int(sig))
        main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await demo.run()
    except asyncio.CancelledError:
        if not caught:
            raise
    except (DemoError, WatchError) as e:  # a part did not start or answer: said plainly, no traceback
        print(f"canaryd demo: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    if caught and not demo.finished:
        print(f"canaryd demo: interrupted by {signal.Signals(caught[0]).name}; everything it started is stopped",
              flush=True)
        return 128 + caught[0]
    if caught:
        print("canaryd demo: stopped; everything it started is stopped", flush=True)
    return demo.exit_code()
