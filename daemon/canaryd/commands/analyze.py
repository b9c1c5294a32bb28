"""`canaryd analyze`: judge recorded snapshots offline, tick by tick, as the daemon would.

Exit codes: 0 advance, 1 rollback, 3 hold, 2 usage, config or input error.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from ..analysis import judge
from ..analysis.judge import JudgeSettings
from ..analysis.verdicts import Decision, Judgement
from ..config import AnalysisSettings, ConfigError, load_config, parse_duration
from ..replay import ReplayError, parse_replay
from .common import DECISION_EXIT, config_problems, fail
from .table import render_judgement

THRESHOLD_FLAGS = (
    ("--error-rate", "error_rate", "max canary 5xx rate, %% (rollback; default %s)"),
    ("--success-rate", "success_rate", "min canary 2xx rate, %% (rollback; default %s)"),
    ("--latency-p95", "latency_p95_ms", "max canary P95, ms (warn; default %s)"),
    ("--latency-p99", "latency_p99_ms", "max canary P99, ms (rollback; default %s)"),
    ("--error-ratio", "error_ratio", "max canary/stable 5xx rate ratio (rollback; default %s)"),
    ("--latency-ratio", "latency_ratio", "max canary/stable P95 ratio (rollback; default %s)"),
    ("--cpu", "cpu", "max canary CPU utilisation, %% (warn; default %s)"),
    ("--memory", "memory", "max canary memory utilisation, %% (warn; default %s)"),
)


OFF = "off"  # a threshold flag given as `off` disables that check (None would mean "not given")


def _threshold(text: str) -> float | str:
    if text.lower() in ("off", "none", "null"):
        return OFF
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 'off', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 'off', got {text!r}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _probability(text: str) -> float:
    value = float(text)
    if not 0 < value <= 0.5:
        raise argparse.ArgumentTypeError(f"must be in (0, 0.5], got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    defaults = JudgeSettings()
    p = sub.add_parser("analyze", help="judge recorded snapshots offline", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", "-i", required=True, metavar="FILE",
                   help="JSON with cumulative snapshots ({\"samples\": [...]}), or - for stdin")
    p.add_argument("--config", "-c", metavar="FILE", help="take the defaults (or --canary's settings) from this config")
    p.add_argument("--canary", metavar="NAMESPACE/NAME", help="with --config: use this canary's settings")
    p.add_argument("--step-duration", type=_duration, metavar="DURATION",
                   help="minimum time before the step can pass (default 5m)")
    p.add_argument("--max-step-duration", type=_duration, metavar="DURATION",
                   help="after this long a hold becomes the timeout policy (default 3 × step duration)")
    p.add_argument("--min-requests", type=_positive_int, metavar="N",
                   help=f"requests each arm needs before the step can pass (default {defaults.min_requests})")
    p.add_argument("--alpha", type=_probability, help=f"family-wise error rate (default {defaults.alpha})")
    for flag, field, text in THRESHOLD_FLAGS:
        p.add_argument(flag, dest=field, type=_threshold, metavar="N|off",
                       help=text.replace("%s", str(getattr(defaults, field))))
    p.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p.add_argument("--every-tick", action="store_true", help="with the table: print every tick's decision")
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

