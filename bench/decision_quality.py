"""Decision quality: canaryd's judge against a Flagger-style and a Kayenta-style baseline.

Every method sees the same simulated traffic (5 % canary share, 30 minutes, 10 s resolution) for
each seed. A run ends at the method's first rollback. We report, per scenario and method, the
share of runs rolled back (the false rollback rate where canary and stable are the same) and the
median time to that rollback (runs never rolled back count as never, so the median is "never"
when fewer than half were rolled back). For canaryd, "passed step" is the share of runs in which
the judge said advance (the gates of a 5-minute step met, every metric passing) before any
rollback, and the median time to that.

Baselines, as the platform document's tools would judge:
- flagger: every 1-minute interval, the canary's 5xx rate over the interval > 5 % or its P95 over
  the interval > 500 ms is a failed check (no data is a failed check too); roll back after 5.
- kayenta: per-minute points of each metric (5xx rate, P95) for both arms; every minute,
  Mann-Whitney (two-sided, 98 %) on all points so far, no correction for the repeated looks; a
  metric fails when it is significant and the canary is worse; any failing metric fails the canary.

Run: python bench/decision_quality.py [--seeds 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path.insert(0, os.path.join(ROOT, "daemon"))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # simulation.py: synthetic traffic, shared with the tests

from canaryd.analysis import judge  # noqa: E402
from canaryd.analysis.distribution import histogram_quantile  # noqa: E402
from canaryd.analysis.judge import JudgeSettings  # noqa: E402
from canaryd.analysis.verdicts import Decision  # noqa: E402
from simulation import BUCKETS, Arm, Increments, Scenario, simulate, snapshots  # noqa: E402

STABLE = Arm(error_rate=0.005, latency_median=0.1, latency_sigma=0.5)
DURATION = 1800.0
TICK = 10.0
INTERVAL = 30.0  # canaryd's default analysis interval


@dataclass(frozen=True)
class Case:
    name: str
    scenario: Scenario
    should_roll_back: str  # by the seed's criteria: "no", "yes", or "boundary"


CASES = (
    Case("A/A 10 rps", Scenario(10, STABLE, STABLE, DURATION, TICK), "no"),
    Case("A/A 100 rps", Scenario(100, STABLE, STABLE, DURATION, TICK), "no"),
    Case("A/A 1000 rps", Scenario(1000, STABLE, STABLE, DURATION, TICK), "no"),
    Case("errors 1.5x", Scenario(100, STABLE, replace(STABLE, error_rate=0.0075), DURATION, TICK), "no"),
    Case("errors 2x", Scenario(100, STABLE, replace(STABLE, error_rate=0.010), DURATION, TICK), "boundary"),
    Case("errors 3x", Scenario(100, STABLE, replace(STABLE, error_rate=0.015), DURATION, TICK), "yes"),
    Case("errors 5x", Scenario(100, STABLE, replace(STABLE, error_rate=0.025), DURATION, TICK), "yes"),
    Case("latency +20%", Scenario(100, STABLE, replace(STABLE, latency_median=0.12), DURATION, TICK), "no"),
    Case("latency +60%", Scenario(100, STABLE, replace(STABLE, latency_median=0.16), DURATION, TICK), "yes"),
)

CANARYD = JudgeSettings()
# The same judge asked Kayenta's question ("is the canary worse at all?"): ratio limit 1 instead of 2.
CANARYD_ANY = replace(CANARYD, error_ratio=1.0)


# ---------------------------------------------------------------------------------------------- methods


def canaryd(inc: Increments, settings: JudgeSettings) -> tuple[float | None, float | None]:
    """(time of the first rollback, time of the first advance). The traffic share stays at 5 % so
    every method sees the same data; the advance time says when a healthy canary could move on."""
    snaps = snapshots(inc)
    every = int(round(INTERVAL / TICK))
    state = judge.start(settings, 0.0, weight=snaps[0].weight)
    advanced = None
    for i, snap in enumerate(snaps):
        if i % every:
            continue
        j, state = judge.observe(state, snap, settings)
        if j.decision is Decision.ROLLBACK:
            return snap.t, advanced
        if j.decision is Decision.ADVANCE and advanced is None:
            advanced = snap.t
    return None, advanced


def _minutes(inc: Increments) -> list[slice]:
    per = int(round(60.0 / TICK))
    return [slice(k, k + per) for k in range(0, len(inc.t) - per + 1, per)]


def _p95(per_bucket: np.ndarray) -> float | None:
    cum = np.cumsum(per_bucket)
    return histogram_quantile(0.95, tuple(zip(BUCKETS, cum.tolist(), strict=True)))


def flagger(inc: Increments, *, error_threshold=5.0, p95_ms=500.0, threshold=5) -> float | None:
    failed = 0
    for m in _minutes(inc):
        n = inc.canary_requests[m].sum()
        if n == 0:
            failed += 1  # Flagger counts "no values found" as a failed check
        else:
            rate = 100.0 * inc.canary_errors[m].sum() / n
            p95 = _p95(inc.canary_buckets[m].sum(axis=0))
            if rate > error_threshold or (p95 is not None and 1000 * p95 > p95_ms):
                failed += 1
        if failed >= threshold:
            return float(inc.t[m.stop - 1])
    return None


def kayenta(inc: Increments, *, confidence=0.98) -> float | None:
    points: dict[str, tuple[list[float], list[float]]] = {"errors": ([], []), "p95": ([], [])}
    alpha = 1.0 - confidence
    for m in _minutes(inc):
        for arm, (req, err, bkt) in enumerate(((inc.canary_requests, inc.canary_errors, inc.canary_buckets),
                                               (inc.stable_requests, inc.stable_errors, inc.stable_buckets))):
            n = req[m].sum()
            if n > 0:
                points["errors"][arm].append(err[m].sum() / n)
                p95 = _p95(bkt[m].sum(axis=0))
                if p95 is not None:
                    points["p95"][arm].append(p95)
        for c, s in points.values():
            if len(c) < 2 or len(s) < 2 or len(set(c) | set(s)) < 2:
                continue
            p = stats.mannwhitneyu(c, s, alternative="two-sided", method="asymptotic").pvalue
            if p < alpha and np.median(c) > np.median(s):
                return float(inc.t[m.stop - 1])
    return None


METHODS = ("canaryd", "canaryd (ratio limit 1)", "flagger-style", "kayenta-style")


def run_case(args: tuple[int, int]) -> tuple[int, int, dict[str, tuple[float | None, float | None]]]:
    case_index, seed = args
    case = CASES[case_index]
    inc = simulate(case.scenario, np.random.default_rng(seed * 1000 + case_index))
    result: dict[str, tuple[float | None, float | None]] = {
        "canaryd": canaryd(inc, CANARYD),
        "canaryd (ratio limit 1)": canaryd(inc, CANARYD_ANY),
        "flagger-style": (flagger(inc), None),
        "kayenta-style": (kayenta(inc), None),
    }
    return case_index, seed, result


# ---------------------------------------------------------------------------------------------- report


def _median_time(times: list[float | None]) -> float:
    values = sorted(math.inf if t is None else t for t in times)
    return statistics.median(values)


def _fmt_time(t: float) -> str:
    if math.isinf(t):
        return "never"
    return f"{t / 60:.1f} min"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    started = time.perf_counter()
    jobs = [(c, s) for c in range(len(CASES)) for s in range(args.seeds)]
    results: dict[int, dict[str, list[float | None]]] = {c: {m: [] for m in METHODS} for c in range(len(CASES))}
    advances: dict[int, dict[str, list[float | None]]] = {c: {m: [] for m in METHODS} for c in range(len(CASES))}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for case_index, _seed, res in pool.map(run_case, jobs, chunksize=8):
            for m, (t_rollback, t_advance) in res.items():
                results[case_index][m].append(t_rollback)
                advances[case_index][m].append(t_advance if t_rollback is None else None)
    elapsed = time.perf_counter() - started

    print(f"decision quality: {args.seeds} seeds per scenario, 5 % canary traffic, {DURATION / 60:.0f} min, "
          f"stable 5xx {STABLE.error_rate:.1%}, canaryd alpha {CANARYD.alpha}, interval {INTERVAL:.0f}s "
          f"({elapsed:.0f} s on {args.workers} workers)\n")
    header = ("scenario", "roll back?", "method", "rolled back", "median time to rollback", "passed step")
    rows = [header]
    summary: dict[tuple[str, str], tuple[float, float]] = {}
    for c, case in enumerate(CASES):
        for m in METHODS:
            times = results[c][m]
            rate = sum(t is not None for t in times) / len(times)
            med = _median_time(times)
            summary[(case.name, m)] = (rate, med)
            adv = advances[c][m]
            passed = "-" if m not in ("canaryd", "canaryd (ratio limit 1)") else (
                f"{100 * sum(t is not None for t in adv) / len(adv):.0f} % (median {_fmt_time(_median_time(adv))})")
            rows.append((case.name, case.should_roll_back, m, f"{100 * rate:.1f} %", _fmt_time(med), passed))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows[1:]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) + " |")

    print("\ntargets:")
    ok_all = True
    aa = [c.name for c in CASES if c.name.startswith("A/A")]
    worst_aa = max(summary[(n, "canaryd")][0] for n in aa)
    slack = 1.96 * math.sqrt(CANARYD.alpha * (1 - CANARYD.alpha) / args.seeds)
    met = worst_aa <= CANARYD.alpha + slack
    ok_all &= met
    print(f"- [{'met' if met else 'MISSED'}] canaryd false rollbacks <= alpha on every A/A level: worst "
          f"{100 * worst_aa:.1f} % vs alpha {100 * CANARYD.alpha:.0f} % (+{100 * slack:.1f} % sampling slack)")
    ours = summary[("errors 3x", "canaryd")][1]
    others = {m: summary[("errors 3x", m)][1] for m in ("flagger-style", "kayenta-style")}
    met = all(ours < t for t in others.values())
    ok_all &= met
    print(f"- [{'met' if met else 'MISSED'}] errors 3x at 100 rps detected faster than both baselines: canaryd "
          f"{_fmt_time(ours)} vs " + ", ".join(f"{m} {_fmt_time(t)}" for m, t in others.items())
          + f" (ratio-limit-1 variant: {_fmt_time(summary[('errors 3x', 'canaryd (ratio limit 1)')][1])})")
    violations = []
    for case in CASES:
        if case.should_roll_back != "yes":
            continue
        ours = summary[(case.name, "canaryd")][1]
        for m in ("flagger-style", "kayenta-style"):
            theirs = summary[(case.name, m)][1]
            frr_theirs = max(summary[(n, m)][0] for n in aa)
            if theirs < ours and frr_theirs <= worst_aa:
                violations.append(f"{m} on {case.name}: {_fmt_time(theirs)} at false rollbacks "
                                  f"{100 * frr_theirs:.1f} %")
    met = not violations
    ok_all &= met
    print(f"- [{'met' if met else 'MISSED'}] no baseline detects faster at an equal or lower false rollback "
          f"rate" + ("" if met else ": " + "; ".join(violations)))
    for m in ("flagger-style", "kayenta-style"):
        worst = max(summary[(n, m)][0] for n in aa)
        print(f"  ({m}: worst A/A false rollback rate {100 * worst:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
