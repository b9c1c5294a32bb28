"""What a canary keeps is kept compactly (bench/scale.py measures it), and reads back as it did before:
the rollout's packed bucket sums, the dry-run route's serialized states, the canaries' shared config
sections, the metrics' counters."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import replace

from canaryd import rollout as ro
from canaryd.analysis import judge
from canaryd.analysis.judge import JudgeSettings
from canaryd.analysis.snapshot import ArmSnapshot, Snapshot
from canaryd.arm_totals import PackedBuckets, add_arm
from canaryd.config import parse_config
from canaryd.rollout import Rollout
from canaryd.rollout_types import HISTORY, History, HistoryEntry, LastDecision, Phase
from canaryd.routers import DryRunRouter
from canaryd.worker_delivery import rollout_for

BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, math.inf)
SETTINGS = JudgeSettings(min_requests=100, step_duration=10.0, max_step_duration=30.0)


def arm(n: float, errors: float, shares: tuple[float, ...]) -> ArmSnapshot:
    return ArmSnapshot(requests=n, errors=errors, successes=n - errors,
                       buckets=tuple((le, n * f) for le, f in zip(BOUNDS, shares, strict=True)))


def test_packed_bucket_sums_read_as_the_tuple_of_pairs() -> None:
    inc = arm(100.0, 1.0, (0.5, 0.9, 1.0, 1.0, 1.0, 1.0))
    total = add_arm(add_arm(ArmSnapshot(), inc), inc)
    assert isinstance(total.buckets, PackedBuckets)
    pairs = tuple((le, 2 * c) for le, c in inc.buckets or ())
    assert total.buckets == pairs and pairs == total.buckets and hash(total.buckets) == hash(pairs)
    assert tuple(total.buckets) == pairs and total.buckets[-1] == pairs[-1] and total.buckets[1:3] == pairs[1:3]
    assert len(total.buckets) == len(pairs) and repr(total.buckets) == repr(pairs)
    assert total == replace(total, buckets=pairs)  # the snapshot equal to the unpacked one
    # Another rollout with the same layout shares its bounds; a new layout starts over from the increment.
    assert add_arm(ArmSnapshot(), inc).buckets.les is total.buckets.les  # type: ignore[union-attr]
    other = ArmSnapshot(requests=1.0, buckets=((0.2, 1.0), (math.inf, 1.0)))
    assert tuple(add_arm(total, other).buckets or ()) == ((0.2, 1.0), (math.inf, 1.0))


def test_the_judge_decides_the_same_on_packed_sums() -> None:
    canary, stable = arm(400.0, 40.0, (0.1, 0.3, 0.6, 0.9, 1.0, 1.0)), arm(400.0, 1.0, (0.5, 0.9, 1.0, 1.0, 1.0, 1.0))
    state_packed = state_plain = judge.start(SETTINGS, 0.0, weight=5)
    packed = plain = Snapshot(0.0, ArmSnapshot(), ArmSnapshot(), 5)
    for t in range(1, 6):
        packed = Snapshot(t * 5.0, add_arm(packed.canary, canary), add_arm(packed.stable, stable), 5)
        plain = Snapshot(t * 5.0, _unpacked(packed.canary), _unpacked(packed.stable), 5)
        a, state_packed = judge.observe(state_packed, packed, SETTINGS)
        b, state_plain = judge.observe(state_plain, plain, SETTINGS)
        assert a == b


def _unpacked(a: ArmSnapshot) -> ArmSnapshot:
    return replace(a, buckets=None if a.buckets is None else tuple(a.buckets))


def test_a_rollout_judged_on_packed_sums_keeps_them_packed() -> None:
    r, _ = ro.start(Rollout(steps=(5, 100), settings=SETTINGS), 0.0)
    r = ro.accumulate(r, 5.0, arm(500.0, 0.0, (1.0,) * 6), arm(500.0, 0.0, (1.0,) * 6))
    r, _, judgement = ro.judge_tick(r, 5.0)
    assert judgement is not None and r.phase is Phase.PROGRESSING
    assert r.counters is not None and isinstance(r.counters.canary.buckets, PackedBuckets)


async def test_dry_run_route_keeps_its_states_serialized_and_reads_fresh_copies() -> None:
    router = DryRunRouter(namespace="ns", route="r", stable_backend="s", canary_backend="c")
    state = {"phase": "progressing", "history": [{"at": 1.5, "reasons": ["a"]}], "pair": (1, 2)}
    await router.write(5, state)
    read = await router.read()
    assert read.state == state and read.state is not state
    read.state["phase"] = "changed"  # type: ignore[index]  # the caller's copy: the route is not changed
    assert (await router.read()).state == state
    assert router.history[-1].state == state
    odd = {"phase": Phase.PAUSED}  # not plain data (a str enum): kept as a copy of its own, types and all
    await router.write(0, odd)
    assert (await router.read()).state == odd and type((await router.read()).state["phase"]) is Phase  # type: ignore[index]
    assert await router.plan(0, odd) == []


def _canary(name: str, **own: object) -> dict[str, object]:
    return {"name": name, "namespace": "ns", "route": name, **own,
            **{a: {"deployment": f"{name}-{a}", "selector": f'job="{name}-{a}"'} for a in ("stable", "canary")}}


def test_canaries_configured_alike_share_their_sections() -> None:
    config = parse_config({"canaries": [_canary("a"), _canary("b"), _canary("c", interval="10s")]})
    a, b, c = config.canaries
    assert a.settings is b.settings and a.gates is b.gates and a.queries is b.queries
    assert a.crash_loop is c.crash_loop and a.settings is not c.settings and c.settings.interval == 10.0
    assert a.key == "ns/a" and a.key is a.key
    assert rollout_for(a).gates is rollout_for(b).gates and rollout_for(a).settings is rollout_for(b).settings


def test_last_decision_reads_as_the_dict_it_was() -> None:
    entry = HistoryEntry(5.0, "hold", "analysis", 0, 5, ("canary has 20 of the 100 requests needed",))
    metrics = [{"name": "error_ratio", "verdict": "inconclusive", "p_value": 1.0, "ci": [0.0, None],
                "reason": "error_ratio: canary 5xx 0.00 % vs stable 0.00 % – ×", "evidence": {"p0": 0.1}}]
    last = LastDecision(entry, metrics, {"gates_met": True, "canary_requests": 20.0, "stable_requests": 400.0})
    assert dict(last) == {**entry, "metrics": metrics, "gates_met": True, "canary_requests": 20.0,
                          "stable_requests": 400.0}
    assert list(last) == [*entry, "metrics", "gates_met", "canary_requests", "stable_requests"] and len(last) == 10
    assert dict(LastDecision(entry)) == dict(entry) and LastDecision(entry).get("metrics") is None


def test_history_entries_keep_long_reasons_compressed() -> None:
    long = ("step running 1m of its minimum 24h", "canary has 300 of the 1000 requests needed",
            "error_ratio: canary 5xx 0.50 % vs stable 0.50 %, ratio 1.31×, 95 % CI 0.07–4.66")
    entry = HistoryEntry(60.0, "hold", "analysis", 0, 5, long)
    assert isinstance(entry._reasons, bytes) and entry.reasons == long and entry["reasons"] == list(long)
    assert dict(entry) == {"at": 60.0, "decision": "hold", "trigger": "analysis", "step": 0, "weight": 5,
                           "reasons": list(long)}
    short = HistoryEntry(0.0, "start", "start", 0, 5, ("rollout started at step 1 of 4: 5 %",))
    assert short.reasons == ("rollout started at step 1 of 4: 5 %",) and isinstance(short._reasons, tuple)


def _holds(n: int) -> list[Mapping[str, object]]:
    """Entries as a progressing canary records them: mostly holds whose reasons differ in their numbers, now
    and then another decision, and a resumed rollout's plain dicts (from the route's annotation)."""
    out: list[Mapping[str, object]] = []
    for i in range(n):
        if i % 17 == 3:
            out.append({"at": 30.0 * i, "decision": "resume", "trigger": "manual", "step": 1, "weight": 25,
                        "reasons": ["resumed by the API"], "extra": i})
        else:
            out.append(HistoryEntry(30.0 * i, "hold" if i % 11 else "advance", "analysis", i // 11, 5,
                                    (f"step running {i}m of its minimum 5m",
                                     f"canary has {150 + 7 * i} of the 1000 requests needed")))
    return out


def test_the_history_reads_as_the_last_decisions_it_was_given() -> None:
    plain: tuple[Mapping[str, object], ...] = ()
    history = History()
    for entry in _holds(130):
        plain, history = (*plain, entry)[-HISTORY:], history.appended(entry)
        assert len(history) == len(plain) and [dict(h) for h in history] == [dict(h) for h in plain]
        assert dict(history[0]) == dict(plain[0]) and dict(history[-1]) == dict(plain[-1])
        assert history == plain and [dict(h) for h in history[-3:]] == [dict(h) for h in plain[-3:]]
        dropped = history.without_last()
        assert [dict(h) for h in dropped] == [dict(h) for h in plain[:-1]]
    assert History(plain) == history and list(History(plain)) == list(history)
    assert len(history._recent) < 2 * History.RECENT  # the others in the block


def test_a_history_whose_last_entry_is_replaced_again_and_again_reads_as_the_entries_it_was_given() -> None:
    """A paused canary replaces its last compact hold every interval (without_last, then appended)."""
    plain: tuple[Mapping[str, object], ...] = ()
    history = History()
    for i, entry in enumerate(_holds(150)):
        if i % 3 and plain:
            plain, history = plain[:-1], history.without_last()
        plain, history = (*plain, entry)[-HISTORY:], history.appended(entry)
        assert [dict(h) for h in history] == [dict(h) for h in plain] and len(history) == len(plain)
        assert [dict(history[k]) for k in (0, len(plain) // 2, -1)] == [dict(plain[k]) for k in (0, len(plain) // 2, -1)]


def test_a_long_history_of_holds_is_kept_compressed() -> None:
    history = History()
    for entry in _holds(200):
        history = history.appended(entry)
    entries = sum(sys.getsizeof(h) + sys.getsizeof(getattr(h, "_reasons", b"")) for h in history._recent)
    assert len(history) == HISTORY and len(history._block) + entries < 2500  # 50 entries were ~15 kB
