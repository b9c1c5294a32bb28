"""Property tests of the replay reader (replay.parse_replay) through `canaryd analyze --input`.

Whatever the file holds: exit 0, 1 or 3 with a decision on stdout, or exit 2 with one line on stderr
that names what is wrong; never "internal error" (the CLI's last line of defence) nor a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryd.cli import main
from fuzz_http import FUZZ

ANY_TEXT = st.text(st.one_of(st.characters(), st.sampled_from(["\ud800", "\udfff"])), max_size=8)
JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
                | st.sampled_from([10**400, -(10**400), 1e308, 5e-324, -0.0]))
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=10,
)
COUNT = st.integers(0, 10**9)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` nine times in ten, so that most files get past the first check."""
    return st.integers(0, 9).flatmap(lambda n: bad if n == 0 else good)


BOUNDS = ("0.05", "0.1", "0.25", "+Inf")


@st.composite
def arms(draw: st.DrawFn, before: dict[str, Any]) -> dict[str, Any]:
    """The next cumulative sample of an arm after `before`: its counters grow (mostly)."""
    requests = before.get("requests", 0) + draw(_mostly(COUNT, st.integers(-10, 0)))
    errors = before.get("errors", 0) + draw(st.integers(0, max(0, requests - before.get("requests", 0))))
    arm: dict[str, Any] = {"requests": requests, "errors": min(errors, requests)}
    if draw(st.integers(0, 3)):
        old = before.get("latency_buckets", dict.fromkeys(BOUNDS, 0))
        fast = [draw(st.floats(0, 1)) for _ in BOUNDS[:-1]]
        grown = requests - before.get("requests", 0)
        shares = [*sorted(fast), 1.0]
        arm["latency_buckets"] = {b: old[b] + int(grown * share) for b, share in zip(BOUNDS, shares, strict=True)}
    for field in ("successes", "cpu", "memory"):
        if draw(st.integers(0, 3)) == 0:
            arm[field] = draw(st.just(requests - arm["errors"]) if field == "successes" else st.floats(0, 100))
    if draw(st.integers(0, 9)) == 0:  # one field of any value, known or not
        arm[draw(st.sampled_from(["requests", "errors", "latency_buckets", "cpu"]) | ANY_TEXT)] = draw(JSON_VALUES)
    return arm


@st.composite
def replays(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed replay most of the time; one value in ten or so is anything."""
    samples: list[dict[str, Any]] = []
    t = draw(st.floats(-1e6, 1e6))
    canary: dict[str, Any] = {}
    stable: dict[str, Any] = {}
    for _ in range(draw(st.integers(1, 6))):
        t += draw(_mostly(st.floats(0.001, 600), st.floats(-10, 10)))
        canary, stable = draw(arms(_numbers(canary))), draw(arms(_numbers(stable)))
        sample: dict[str, Any] = {"t": t, "canary": canary, "stable": stable}
        if draw(st.booleans()):
            sample["weight"] = draw(_mostly(st.floats(0, 100), JSON_SCALARS))
        if draw(st.integers(0, 19)) == 0:
            sample[draw(ANY_TEXT)] = draw(JSON_VALUES)
        samples.append(sample)
    return {"samples": samples}


def _numbers(arm: dict[str, Any]) -> dict[str, Any]:
    """The counters of an arm that are still well-formed, as the base of the next sample."""
    out = {k: v for k, v in arm.items() if k in ("requests", "errors") and type(v) is int and v >= 0}
    buckets = arm.get("latency_buckets")
    if isinstance(buckets, dict) and set(buckets) == set(BOUNDS):
        out["latency_buckets"] = buckets
    return out


@st.composite
def files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "replay", "replay", "replay"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    doc = draw(JSON_VALUES if kind == "json" else replays())
    try:
        return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only as a \uXXXX escape, as in a real file
        return json.dumps(doc).encode("ascii")


def test_any_replay_file_is_judged_or_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    path = tmp_path / "replay.json"
    seen: dict[int, int] = {}

    @FUZZ
    @given(content=files())
    def one(content: bytes) -> None:
        path.write_bytes(content)
        code = main(["analyze", "--input", str(path)])
        out, err = capsys.readouterr()
        seen[code] = seen.get(code, 0) + 1
        assert code in (0, 1, 2, 3), (code, err)
        assert "internal error" not in err and "Traceback" not in err, err
        if code == 2:
            assert out == "" and err.startswith("canaryd analyze: ") and len(err.splitlines()) == 1, err
        else:
            assert out.startswith("decision: ") and err == "", (out, err)

    one()
    print(f"replay exit codes: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= FUZZ.max_examples, seen
    assert seen.get(2) and (seen.get(0, 0) + seen.get(1, 0) + seen.get(3, 0)), seen
