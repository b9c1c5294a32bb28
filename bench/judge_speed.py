"""Judge speed: metric verdicts per second on one core, the current judge against a baseline revision.

The corpus is rollouts of real-looking traffic (tests/simulation.py's TickSource: binomial, common and
independent bursts, per-pod rates, latency swings; 1 to 1000 rps; healthy and failing canaries), each a
run of cumulative snapshots with CPU and memory, 30 s apart, the weight stepping 5/25/50/100 % every
ten ticks (`judge.next_step`). It is built once, written to JSON, and judged by subprocesses pinned
to one core: some importing this tree's daemon/canaryd, some the baseline revision's, exported with
`git archive REV daemon/canaryd` into a temporary directory (launched in turn, see below). A verdict is
one metric judged by one `judge.observe` (8 per tick with the default settings). The two runs' decisions, verdicts and p-values
are compared tick by tick. Where the tree has `judge.observe_many`, it is timed too, with every rollout's
tick i judged in one call, and its results compared the same way. The memory figure is the mean size of an
`AnalysisState` after the last tick (objects followed through fields and containers; the shared priors not
counted): a daemon keeps one per canary.

A second pair of figures times `observe` with each judgement's `to_json()` read as well (its reasons, and every
metric's reason and evidence), as a daemon's tick records it: the judge leaves those to be made when first read.
A third pair also records each judgement in a rollout as a daemon's tick does (`rollout._record`: the history
entry, the last decision with every metric's JSON, the report page's tick): a daemon's cost of a judgement
but for its I/O (the route's write, the logs, the metrics).

Each judge runs in --launches fresh worker processes (default 3), launched in turn with the other's (baseline,
current, baseline, current, ...), each timing --rounds passes (default 3); the best pass of all counts. A
machine shared with others is slower in windows of seconds: one process, or one side run wholly before the
other, can fall inside such a window; passes spread over several processes in turn seldom all do.

Run: python bench/judge_speed.py [--baseline REV] [--rollouts 48] [--ticks 40] [--rounds 3] [--launches 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# The default baseline: the judge with its current statistics (stable's history, the error ratio's prior and
# share of alpha) before the speed work, on the branch merged into main with it.
DEFAULT_BASELINE = "1dbb041827bf967f598b71583ac86c58bacac793"
STEPS = (5.0, 25.0, 50.0, 100.0)
INTERVAL = 30.0
TICKS_PER_STEP = 10
NUMBERS = ("p_value", "anytime_p_value", "adjusted_p_value", "ratio")


# ---------------------------------------------------------------------------------------------- corpus


def _arm_json(a: Any, cpu: float, memory: float) -> dict[str, Any]:
    return {"requests": a.requests, "errors": a.errors, "successes": a.successes,
            "buckets": [list(b) for b in a.buckets], "cpu": cpu, "memory": memory}


def _plus(a: dict[str, Any], b: Any) -> dict[str, Any]:
    return {"requests": a["requests"] + b.requests, "errors": a["errors"] + b.errors,
            "successes": a["successes"] + b.successes,
            "buckets": [[le, x + y] for (le, x), (_, y) in zip(a["buckets"], b.buckets, strict=True)]}


def _rollout(rps: float, model: str, bad: bool, seed: int, ticks: int) -> list[dict[str, Any]]:
    import numpy as np

    from simulation import PROM_DEFAULT_BUCKETS, Arm, TickSource, Traffic

    latency = model == "latency"
    traffic = Traffic(errors="binomial" if latency else model, latency_swing=0.2 if latency else 0.0,
                      bounds=PROM_DEFAULT_BUCKETS if latency else Traffic().bounds)
    stable = Arm(error_rate=0.005, latency_median=0.05, latency_sigma=0.6)
    canary = Arm(error_rate=0.02, latency_median=0.12, latency_sigma=0.6) if bad else stable
    rng = np.random.default_rng(seed)
    source = TickSource(rps, stable, canary, traffic, rng)
    zero = {"requests": 0.0, "errors": 0.0, "successes": 0.0, "buckets": [[le, 0.0] for le in traffic.bounds]}
    totals = {"canary": zero, "stable": zero}
    out = []
    for i in range(ticks):
        weight = STEPS[min(i // TICKS_PER_STEP, len(STEPS) - 1)]
        tick = source.tick(weight, INTERVAL)
        totals = {"canary": _plus(totals["canary"], tick.canary), "stable": _plus(totals["stable"], tick.stable)}
        cpu = [float(x) for x in rng.uniform(20, 70, 4)]
        out.append({"t": INTERVAL * (i + 1), "weight": weight,
                    "next_step": (i + 1) % TICKS_PER_STEP == 0 and weight < 100,
                    "canary": {**totals["canary"], "cpu": cpu[0], "memory": cpu[1]},
                    "stable": {**totals["stable"], "cpu": cpu[2], "memory": cpu[3]}})
    return out


def build_corpus(rollouts: int, ticks: int) -> list[list[dict[str, Any]]]:
    sys.path.insert(0, os.path.join(ROOT, "daemon"))
    sys.path.insert(0, os.path.join(ROOT, "tests"))  # simulation.py, shared with the tests
    # Every traffic model within the first five rollouts, so that a short corpus still has them all.
    kinds = [(rps, model, bad) for rps in (1000, 100, 10, 1) for bad in (False, True)
             for model in ("binomial", "common", "independent", "pods", "latency")]
    return [_rollout(*kinds[i % len(kinds)], seed=1000 + i, ticks=ticks) for i in range(rollouts)]


# ---------------------------------------------------------------------------------------------- worker


def _snapshots(corpus: list[list[dict[str, Any]]]) -> list[list[tuple[Any, dict[str, Any]]]]:
    from canaryd.analysis.snapshot import ArmSnapshot, Snapshot

    def arm(a: dict[str, Any]) -> Any:
        return ArmSnapshot(requests=a["requests"], errors=a["errors"], successes=a["successes"],
                           buckets=tuple((float(le), float(c)) for le, c in a["buckets"]),
                           cpu=a["cpu"], memory=a["memory"])

    return [[(Snapshot(t=s["t"], canary=arm(s["canary"]), stable=arm(s["stable"]), weight=s["weight"]), s)
             for s in run] for run in corpus]


def _kept(j: Any) -> list[Any]:
    return [j.decision.value, [[m.name, m.verdict.value, *(getattr(m, k) for k in NUMBERS)] for m in j.metrics]]


def _judge_all(runs: list[list[tuple[Any, dict[str, Any]]]], keep: bool,
               read: bool = False, record: bool = False) -> tuple[int, list[Any]]:
    """`read`: also each judgement's JSON (its reasons and every metric's reason and evidence), as a daemon's
    tick records it (rollout history, last decision): the judge may leave those to be made when first read.
    `record`: also each judgement recorded in a rollout as a daemon's tick does (rollout._record: the history
    entry, the last decision with every metric's JSON, the report page's tick)."""
    from canaryd import rollout
    from canaryd.analysis import judge
    from canaryd.analysis.settings import JudgeSettings

    settings = JudgeSettings()
    verdicts, kept = 0, []
    for run in runs:
        first = run[0][1]
        state = judge.start(settings, 0.0, weight=first["weight"], baseline=None)
        r = rollout.start(rollout.Rollout(steps=STEPS, settings=settings), 0.0)[0] if record else None
        for snap, raw in run:
            j, state = judge.observe(state, snap, settings)
            verdicts += len(j.metrics)
            if keep:
                kept.append(_kept(j))
            if read:
                j.to_json()
            if r is not None:
                r = rollout._record(r, at=snap.t, decision="hold", trigger=rollout.Trigger.ANALYSIS,
                                    reasons=j.reasons, judgement=j)
            if raw["next_step"]:
                state = judge.next_step(state, snap.t, weight=STEPS[STEPS.index(raw["weight"]) + 1])
    return verdicts, kept


def _judge_batched(runs: list[list[tuple[Any, dict[str, Any]]]], keep: bool,
                   many: bool = True) -> tuple[int, list[Any], list[Any]]:
    """Every rollout's tick i in one `judge.observe_many` call (the rollouts run side by side, as canaries
    judged in one pass would); results in the order of `_judge_all`. Also returns the final states.

    `many` False: the same order with one `judge.observe` each, as a daemon's tick judges its canaries one
    after another, each with its own state."""
    from canaryd.analysis import judge
    from canaryd.analysis.settings import JudgeSettings

    settings = JudgeSettings()
    states = [judge.start(settings, 0.0, weight=run[0][1]["weight"], baseline=None) for run in runs]
    verdicts, kept = 0, [[] for _ in runs]  # type: list[list[Any]]
    for i in range(max(len(r) for r in runs)):
        live = [k for k, r in enumerate(runs) if i < len(r)]
        judged = (judge.observe_many([states[k] for k in live], [runs[k][i][0] for k in live], settings) if many
                  else [judge.observe(states[k], runs[k][i][0], settings) for k in live])
        for k, (j, state) in zip(live, judged, strict=True):
            verdicts += len(j.metrics)
            if keep:
                kept[k].append(_kept(j))
            snap, raw = runs[k][i]
            if raw["next_step"]:
                state = judge.next_step(state, snap.t, weight=STEPS[STEPS.index(raw["weight"]) + 1])
            states[k] = state
    return verdicts, [x for run in kept for x in run], states


def state_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes an object holds, following dataclass fields and containers (each object once); the priors,
    shared by every canary, and enums are not counted."""
    import dataclasses
    import enum

    from canaryd.analysis.counts import MixturePrior

    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, bool | enum.Enum | MixturePrior | type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, tuple | list | set | frozenset):
        size += sum(state_bytes(x, seen) for x in obj)
    elif isinstance(obj, dict):
        size += sum(state_bytes(k, seen) + state_bytes(v, seen) for k, v in obj.items())
    elif dataclasses.is_dataclass(obj):
        size += sum(state_bytes(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
        if hasattr(obj, "__dict__"):  # cached properties
            size += sys.getsizeof(obj.__dict__) + sum(state_bytes(v, seen) for v in vars(obj).values())
    return size


def _final_states(runs: list[list[tuple[Any, dict[str, Any]]]]) -> list[Any]:
    from canaryd.analysis import judge
    from canaryd.analysis.settings import JudgeSettings

    settings = JudgeSettings()
    states = []
    for run in runs:
        state = judge.start(settings, 0.0, weight=run[0][1]["weight"], baseline=None)
        for snap, raw in run:
            _, state = judge.observe(state, snap, settings)
            if raw["next_step"]:
                state = judge.next_step(state, snap.t, weight=STEPS[STEPS.index(raw["weight"]) + 1])
        states.append(state)
    return states


def _memory(states: list[Any]) -> dict[str, float]:
    """Mean bytes per AnalysisState, and of its anytime tests (the rest is the two snapshots it keeps)."""
    total = [state_bytes(st) for st in states]
    tests = [state_bytes(st.sequentials) for st in states]
    return {"state": sum(total) / len(total), "tests": sum(tests) / len(tests)}


def _best(fn: Any, rounds: int) -> float:
    # What the worker holds by now (the kept results, the states measured) is moved out of the collector's
    # reach, so that a pass timed later does not pay for traversing what an earlier one left.
    gc.collect()
    gc.freeze()
    best = math.inf
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def worker(corpus_path: str, rounds: int, expect: str) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    import canaryd
    from canaryd.analysis import judge

    where = os.path.realpath(canaryd.__file__)
    if not where.startswith(os.path.realpath(expect)):
        raise SystemExit(f"imported canaryd from {where}, expected under {expect}")
    with open(corpus_path) as f:
        runs = _snapshots(json.load(f))
    verdicts, kept = _judge_all(runs, keep=True)  # also warms up imports and caches
    out: dict[str, Any] = {"verdicts": verdicts, "observes": sum(len(r) for r in runs), "results": kept,
                           "seconds": _best(lambda: _judge_all(runs, keep=False), rounds),
                           "read_seconds": _best(lambda: _judge_all(runs, keep=False, read=True), rounds),
                           "interleaved_seconds": _best(lambda: _judge_batched(runs, keep=False, many=False), rounds),
                           "record_seconds": _best(lambda: _judge_all(runs, keep=False, read=True, record=True), rounds),
                           "memory": _memory(_final_states(runs))}
    if hasattr(judge, "observe_many"):
        _, out["batch_results"], _ = _judge_batched(runs, keep=True)
        out["batch_seconds"] = _best(lambda: _judge_batched(runs, keep=False), rounds)
    json.dump(out, sys.stdout)


# ---------------------------------------------------------------------------------------------- compare


def export(rev: str, into: str) -> str:
    """The revision's daemon/canaryd as a package directory; returns the directory to put on sys.path."""
    archive = os.path.join(into, "judge.tar")
    subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", "-o", archive, rev, "daemon/canaryd"],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return os.path.join(into, "daemon")


def run_worker(path: str, corpus: str, rounds: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, __file__, "--worker", corpus, "--rounds", str(rounds),
                          "--expect", path], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the worker judging with {path} failed:\n{out.stderr}")
    return json.loads(out.stdout)


@dataclass
class Diff:
    decisions: int = 0
    verdicts: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    shape: int = 0


def _num(d: Diff, a: Any, b: Any) -> None:
    if a is None or b is None:
        d.shape += a is not b
        return
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        d.shape += not (a == b or (math.isnan(a) and math.isnan(b)))
        return
    d.max_abs = max(d.max_abs, abs(a - b))
    if a != b:
        d.max_rel = max(d.max_rel, abs(a - b) / max(abs(a), abs(b)))


def compare(base: list[Any], cur: list[Any]) -> Diff:
    d = Diff(shape=int(len(base) != len(cur)))
    for (dec_b, ms_b), (dec_c, ms_c) in zip(base, cur, strict=False):
        d.decisions += dec_b != dec_c
        if len(ms_b) != len(ms_c):
            d.shape += 1
            continue
        for mb, mc in zip(ms_b, ms_c, strict=True):
            d.shape += mb[0] != mc[0]
            d.verdicts += mb[1] != mc[1]
            for a, b in zip(mb[2:], mc[2:], strict=True):
                _num(d, a, b)
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision of the judge to compare with")
    ap.add_argument("--rollouts", type=int, default=48)
    ap.add_argument("--ticks", type=int, default=40, help="judgements per rollout (30 s apart)")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes per worker process; the best counts")
    ap.add_argument("--launches", type=int, default=3, help="worker processes per judge, launched in turn")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--expect", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.rounds, args.expect)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.json")
        with open(corpus, "w") as f:
            json.dump(build_corpus(args.rollouts, args.ticks), f)
        base_path, cur_path = export(args.baseline, tmp), os.path.join(ROOT, "daemon")
        base, cur = [], []
        for _ in range(args.launches):
            base.append(run_worker(base_path, corpus, args.rounds))
            cur.append(run_worker(cur_path, corpus, args.rounds))
    return report(args, best_of(base), best_of(cur))


def best_of(launches: list[dict[str, Any]]) -> dict[str, Any]:
    """One judge's launches as one: the first's results and memory, each timing's best over all of them."""
    out = dict(launches[0])
    for run in launches[1:]:
        if run["results"] != out["results"] or run.get("batch_results") != out.get("batch_results"):
            raise SystemExit("one judge's worker processes judged the corpus differently")
    for key in [k for k in out if k.endswith("seconds")]:
        out[key] = min(run[key] for run in launches)
    return out


def _identical(label: str, base: list[Any], cur: list[Any]) -> bool:
    d = compare(base, cur)
    same = not (d.decisions or d.verdicts or d.shape) and d.max_abs <= 1e-9
    print(f"  identical results, {label:<13} {'yes' if same else 'NO'}: {d.decisions} decisions and {d.verdicts} "
          f"verdicts differ, {d.shape} structural differences, p-values/ratios max abs diff {d.max_abs:.3g}, "
          f"max rel diff {d.max_rel:.3g}")
    return same


def _print_rows(rows: list[tuple[str, Any]], cur: dict[str, Any]) -> list[float]:
    """Rows timed alike, each with its rate and its ratio to the first row's; nothing if one is missing.
    Returns the rates."""
    if any(seconds is None for _, seconds in rows):
        return []
    rates = [cur["verdicts"] / seconds for _, seconds in rows]
    for (label, seconds), rate in zip(rows, rates, strict=True):
        print(f"  {label:<46} {rate:>10,.0f} verdicts/s  {1e3 * seconds / cur['observes']:.3f} ms per canary "
              f"tick  {rate / rates[0]:.2f}x")
    return rates


def report(args: argparse.Namespace, base: dict[str, Any], cur: dict[str, Any]) -> int:
    rows = [(f"baseline {args.baseline[:12]}, observe", base["seconds"]), ("current, observe", cur["seconds"])]
    if "batch_seconds" in cur:
        rows.append((f"current, observe_many ({args.rollouts} canaries a call)", cur["batch_seconds"]))
    read = [(f"baseline {args.baseline[:12]}, observe + to_json", base.get("read_seconds")),
            ("current, observe + to_json", cur.get("read_seconds"))]
    print(f"judge speed: {args.rollouts} rollouts × {args.ticks} ticks = {cur['observes']} observes, "
          f"{cur['verdicts']} metric verdicts, best of {args.launches} processes × {args.rounds} passes, one core each")
    rates = _print_rows(rows, cur)
    _print_rows(read, cur)  # each judgement's JSON read too (reasons, evidence), as a daemon's tick records it
    # And recorded in a rollout as a daemon's tick does: what a daemon pays a judgement, but for its I/O.
    _print_rows([(f"baseline {args.baseline[:12]}, observe + recorded", base.get("record_seconds")),
                 ("current, observe + recorded", cur.get("record_seconds"))], cur)
    # A daemon's order (every canary's tick i before any tick i + 1): each observe finds less of its canary's
    # objects in the CPU's cache than back to back. Information, not the target's measure.
    _print_rows([(f"baseline {args.baseline[:12]}, observe interleaved", base.get("interleaved_seconds")),
                 ("current, observe interleaved", cur.get("interleaved_seconds"))], cur)
    same = _identical("observe", base["results"], cur["results"])
    if "batch_results" in cur:
        same = _identical("observe_many", base["results"], cur["batch_results"]) and same
    mb, mc = base["memory"], cur["memory"]
    print(f"  memory per AnalysisState after {args.ticks} ticks: baseline {mb['state']:,.0f} bytes (anytime tests "
          f"{mb['tests']:,.0f}), current {mc['state']:,.0f} bytes (anytime tests {mc['tests']:,.0f}); "
          f"10,000 canaries: {mb['state'] * 1e4 / 2**20:,.0f} MiB -> {mc['state'] * 1e4 / 2**20:,.0f} MiB")
    for label, rate in zip(("observe", "observe_many"), rates[1:], strict=False):
        print(f"- [{'met' if rate >= 50_000 else 'MISSED'}] >= 50,000 metric verdicts/s on one core, {label}: "
              f"{rate:,.0f}")
    return 0 if same else 1

if __name__ == "__main__":
    sys.exit(main())
