"""Drive the judge through a whole rollout the way rollout.py does, on a TickSource's traffic.

Steps 5/25/50/100 % by default, one judgement per interval. The baseline is the counters at the moment
the rollout starts (all zero here), so the first tick judges. A hold past max_step_duration pauses the
rollout at its weight; a paused canary still has traffic and is judged for failure only
(`judge.observe(..., paused=True)`) until the horizon. Alongside, an oracle SPRT that knows the true error
ratio k (H0: ratio = error_ratio against H1: ratio = k, simple likelihood ratio) reads the same counts and
keeps reading them after the judge has decided, so its time is the oracle's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from canaryd.analysis import judge
from canaryd.analysis.judge import JudgeSettings
from canaryd.analysis.snapshot import ArmSnapshot, Snapshot
from canaryd.analysis.verdicts import Decision, Judgement
from simulation import Arm, TickSource, Traffic

ORACLE_WEIGHT = 50.0


@dataclass(frozen=True)
class Outcome:
    outcome: str  # rollback | promoted | paused | running (still at a step at the horizon)
    at: float | None  # when the rollback or promotion happened
    paused_at: float | None
    oracle_at: float | None  # when the oracle SPRT crossed, if it did within the horizon
    last: Judgement | None


def _plus(a: ArmSnapshot, b: ArmSnapshot) -> ArmSnapshot:
    buckets = None
    if a.buckets is not None and b.buckets is not None:
        buckets = tuple((le, x + y) for (le, x), (_, y) in zip(a.buckets, b.buckets, strict=True))
    return ArmSnapshot(requests=(a.requests or 0) + (b.requests or 0), errors=(a.errors or 0) + (b.errors or 0),
                       successes=(a.successes or 0) + (b.successes or 0), buckets=buckets)


def _zero(bounds: tuple[float, ...]) -> ArmSnapshot:
    return ArmSnapshot(requests=0.0, errors=0.0, successes=0.0, buckets=tuple((le, 0.0) for le in bounds))


@dataclass
class Oracle:
    """Wald's SPRT of H0: ratio = r0 against H1: ratio = k on each tick's conditional canary share."""

    r0: float
    k: float
    alpha: float
    log_lr: float = 0.0
    at: float | None = None

    def add(self, t: float, x_c: float, n_c: float, x_s: float, n_s: float) -> None:
        if self.at is not None or n_c <= 0 or n_s <= 0 or x_c + x_s <= 0 or self.k <= self.r0:
            return
        q0 = self.r0 * n_c / (self.r0 * n_c + n_s)
        q1 = self.k * n_c / (self.k * n_c + n_s)
        self.log_lr += x_c * math.log(q1 / q0) + x_s * math.log((1 - q1) / (1 - q0))
        if self.log_lr >= math.log(1 / self.alpha):
            self.at = t


def drive(rps: float, stable: Arm, canary: Arm, traffic: Traffic, seed: int, settings: JudgeSettings, *,
          steps: tuple[float, ...] = (5, 25, 50, 100), interval: float = 30.0, horizon: float = 3600.0,
          judge_paused: bool = True, history: int | None = None) -> Outcome:
    """`history`: that many intervals of stable alone before the rollout, given to the judge as the daemon
    reads them when a rollout starts (None: no history, the judge's prior instead)."""
    rng = np.random.default_rng(seed)
    source = TickSource(rps, stable, canary, traffic, rng)
    before = None if history is None else [source.tick(0.0, interval).stable for _ in range(history)]
    step, weight = 0, float(steps[0])
    total = Snapshot(t=0.0, canary=_zero(traffic.bounds), stable=_zero(traffic.bounds), weight=weight)
    state = judge.start(settings, 0.0, weight=weight, baseline=total, history=before)
    k = canary.error_rate / stable.error_rate if stable.error_rate > 0 else 1.0
    oracle = Oracle(settings.error_ratio or 2.0, k, settings.alpha)
    result: tuple[str, float | None] | None = None
    paused_at: float | None = None
    last = None
    t = 0.0
    while t < horizon - 1e-9:
        t += interval
        # Once the judge has decided, the oracle reads on at the weight of the last step with a stable arm.
        tick = source.tick(min(weight, ORACLE_WEIGHT) if result is not None else weight, interval)
        oracle.add(t, tick.canary.errors, tick.canary.requests, tick.stable.errors, tick.stable.requests)
        if result is not None:
            if oracle.at is not None or oracle.k <= oracle.r0:
                break
            continue
        total = Snapshot(t=t, canary=_plus(total.canary, tick.canary), stable=_plus(total.stable, tick.stable),
                         weight=weight)
        if paused_at is not None and not judge_paused:
            continue
        last, state = judge.observe(state, total, settings, paused=paused_at is not None)
        if last.decision is Decision.ROLLBACK:
            result = ("rollback", t)
        elif last.decision is Decision.HOLD and last.timed_out:
            paused_at = t
        elif last.decision is Decision.ADVANCE:
            if step + 1 == len(steps):
                result = ("promoted", t)
            else:
                step += 1
                weight = float(steps[step])
                state = judge.next_step(state, t, weight=weight)
    if result is None:
        result = ("paused" if paused_at is not None else "running", None)
    return Outcome(result[0], result[1], paused_at, oracle.at, last)
