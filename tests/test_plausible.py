"""sources/plausible.py: totals no real service produces are named, plausible ones pass."""

from __future__ import annotations

import math

import pytest

from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.sources.plausible import implausible

OK_BUCKETS = ((0.1, 5.0), (0.5, 9.0), (math.inf, 10.0))


@pytest.mark.parametrize("arm", [
    ArmSnapshot(),
    ArmSnapshot(requests=0.0, errors=0.0, successes=0.0),
    ArmSnapshot(requests=100.0, errors=3.0, successes=97.0, buckets=OK_BUCKETS, cpu=130.0, memory=40.0),
    ArmSnapshot(requests=10.5, errors=10.5),  # every request failed: possible
])
def test_plausible_totals_pass(arm: ArmSnapshot) -> None:
    assert implausible(arm) is None


@pytest.mark.parametrize(("arm", "words"), [
    (ArmSnapshot(requests=100.0, errors=677.0), "errors total 677 is above the requests total 100"),
    (ArmSnapshot(requests=1e308, errors=1e308), "requests total 1e+308 is not a count"),
    (ArmSnapshot(requests=math.inf), "requests total inf is not a count"),
    (ArmSnapshot(requests=math.nan), "requests total nan is not a count"),
    (ArmSnapshot(requests=-1.0), "requests total -1.0 is not a count"),
    (ArmSnapshot(requests=10.0, successes=11.0), "successes total 11 is above the requests total 10"),
    (ArmSnapshot(requests=10.0, successes=8.0, errors=5.0), "add up to more than the requests total 10"),
    (ArmSnapshot(cpu=math.nan), "cpu nan is not a utilisation"),
    (ArmSnapshot(buckets=((0.1, 5.0), (math.inf, 4.0))), "not cumulative"),
    (ArmSnapshot(buckets=((0.1, -5.0), (math.inf, 4.0))), "count -5.0 is not a count"),
])
def test_impossible_totals_are_named(arm: ArmSnapshot, words: str) -> None:
    why = implausible(arm)
    assert why is not None and words in why
