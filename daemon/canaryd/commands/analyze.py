"""`canaryd analyze`: judge recorded snapshots offline, tick by tick, as the daemon would.

Exit codes: 0 advance, 1 rollback, 3 hold, 2 usage, config or input error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields, replace

from ..analysis import judge
from ..analysis.judge import JudgeSettings
from ..analysis.settings import Thresholds
from ..analysis.verdicts import Decision, Judgement
from ..config import AnalysisSettings, ConfigError, load_config, read_setting
from ..replay import ReplayError, parse_replay
from ..report.page import render_page
from ..report.replayed import replay_report
from .common import DECISION_EXIT, config_problems, fail
from .table import render_judgement

OFF = "off"  # a threshold flag given as `off` disables that check (None would mean "not given")


def _flag(name: str) -> str:
    return "--" + name.removesuffix("_ms").replace("_", "-")


# One flag per threshold, named after its config key (latency_p95_ms → --latency-p95).
THRESHOLD_FLAGS = tuple((_flag(f.name), f.name, f.metadata) for f in fields(Thresholds))


def _checked(kind: str, *, off: bool = False):
    """An argparse type checked by the config's own validator for that kind of setting."""
    def parse(text: str) -> object:
        if off and text.strip().lower() in ("off", "none", "null"):
            return OFF
        try:
            return read_setting(kind, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e) + (" (or off to disable)" if off else "")) from None
    parse.__name__ = kind  # argparse names the type in some messages
    return parse


def register(sub: argparse._SubParsersAction) -> None:
    defaults = JudgeSettings()
    p = sub.add_parser("analyze", help="judge recorded snapshots offline", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", "-i", required=True, metavar="FILE",
                   help="JSON with cumulative snapshots ({\"samples\": [...]}), or - for stdin")
    p.add_argument("--config", "-c", metavar="FILE", help="take the defaults (or --canary's settings) from this config")
    p.add_argument("--canary", metavar="NAMESPACE/NAME", help="with --config: use this canary's settings")
    p.add_argument("--step-duration", type=_checked("duration"), metavar="DURATION",
                   help="minimum time before the step can pass (default 5m)")
    p.add_argument("--max-step-duration", type=_checked("duration"), metavar="DURATION",
                   help="after this long a hold becomes the timeout policy (default 3 × step duration)")
    p.add_argument("--min-requests", type=_checked("count"), metavar="N",
                   help=f"requests each arm needs before the step can pass (default {defaults.min_requests})")
    p.add_argument("--alpha", type=_checked("alpha"), help=f"family-wise error rate (default {defaults.alpha})")
    for flag, name, meta in THRESHOLD_FLAGS:
        p.add_argument(flag, dest=name, type=_checked(meta["kind"], off=True), metavar="N|off",
                       help=f"{meta['doc']} ({meta['action']} {meta['when']}; default {getattr(defaults, name):g})"
                            .replace("%", "%%"))
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.add_argument("--every-tick", action="store_true", help="with the table: print every tick's decision")
    p.add_argument("--report", metavar="FILE.html",
                   help="also write the replay's report page (one self-contained HTML file) there")
    p.set_defaults(handler=run)


def _settings(args: argparse.Namespace) -> JudgeSettings:
    analysis = AnalysisSettings()
    if args.config:
        config = load_config(args.config)
        analysis = config.defaults
        if args.canary:
            ns, _, name = args.canary.partition("/")
            canary = config.canary(ns, name)
            if canary is None:
                known = ", ".join(c.key for c in config.canaries) or "none"
                raise ConfigError([f"{args.config}: no canary {args.canary!r}; configured: {known}"])
            analysis = canary.settings
    elif args.canary:
        raise ConfigError(["--canary needs --config"])
    overrides: dict[str, object] = {}
    if args.step_duration is not None:
        overrides["step_duration"] = args.step_duration
        if args.max_step_duration is None:
            overrides["max_step_duration"] = 3 * args.step_duration
    if args.max_step_duration is not None:
        overrides["max_step_duration"] = args.max_step_duration
    if args.min_requests is not None:
        overrides["min_requests"] = args.min_requests
    if args.alpha is not None:
        overrides["alpha"] = args.alpha
    settings = replace(analysis.judge_settings(), **overrides)
    thresholds = {field: None if getattr(args, field) == OFF else getattr(args, field)
                  for _, field, _ in THRESHOLD_FLAGS if getattr(args, field) is not None}
    return replace(settings, **thresholds)


def judge_replay(snapshots, settings: JudgeSettings) -> tuple[Judgement, list[Judgement]]:
    """Judge every tick; stop at the first rollback, as the daemon would."""
    state = judge.start(settings, snapshots[0].t, weight=snapshots[0].weight)
    ticks: list[Judgement] = []
    for snap in snapshots:
        judgement, state = judge.observe(state, snap, settings)
        ticks.append(judgement)
        if judgement.decision is Decision.ROLLBACK:
            break
    return ticks[-1], ticks


def write_report(path: str, source: str, snapshots, ticks: list[Judgement], alpha: float) -> None:
    """The replay's report page, written whole (a half-written page is never left behind)."""
    page = render_page(replay_report(source, snapshots, ticks, alpha))
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
    except ConfigError as e:
        return config_problems(e)
    try:
        if args.input == "-":
            text = sys.stdin.buffer.read()
            source = "stdin"
        else:
            with open(args.input, "rb") as f:
                text = f.read()
            source = args.input
    except OSError as e:
        return fail("analyze", f"{args.input}: cannot read: {e.strerror}")
    try:
        replay = parse_replay(text, source)
    except ReplayError as e:
        return fail("analyze", str(e))
    final, ticks = judge_replay(replay.snapshots, settings)
    if args.report:
        try:
            write_report(args.report, source, replay.snapshots, ticks, settings.alpha)
        except OSError as e:
            return fail("analyze", f"{args.report}: cannot write the report: {e.strerror}")
    if args.output == "json":
        out = final.to_json()
        out["ticks"] = [{"at": t.at, "decision": t.decision.value} for t in ticks]
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        if args.every_tick:
            for t in ticks[:-1]:
                print(f"t={t.at:g}s  {t.decision.value:<8} {t.reasons[0] if t.reasons else ''}")
        print(render_judgement(final))
    return DECISION_EXIT[final.decision]

