"""The report pages without a browser: the tick log's bound, escaping, `analyze --report`, the /ui routes."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from canaryd import rollout as ro
from canaryd.analysis.judge import JudgeSettings
from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.analysis.verdicts import Action, MetricResult, Verdict
from canaryd.cli import main
from canaryd.report import timeline
from canaryd.report.index import render_index
from canaryd.report.page import Report, render_page
from test_server import API_TOKEN, Stack, _stack

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPT = "<script>document.title='pwned'</script>"


def _judged_rollout(ticks: int) -> ro.Rollout:
    r = ro.Rollout(steps=(10, 50, 100), settings=JudgeSettings(step_duration=10_000, max_step_duration=None))
    r, _ = ro.start(r, 0.0)
    for i in range(1, ticks + 1):
        arm = ArmSnapshot(requests=100.0, errors=1.0, successes=99.0)
        r = ro.accumulate(r, float(i), arm, arm)
        r, _, _ = ro.judge_tick(r, float(i))
    return r


def test_every_decision_is_a_tick_entry_and_the_log_is_bounded() -> None:
    r = _judged_rollout(5)
    assert [t.decision for t in r.ticks] == ["start"] + ["hold"] * 5
    assert all(t.judged for t in r.ticks[1:]) and r.ticks[-1].metrics
    assert {m.name for m in r.ticks[-1].metrics} >= {"error_ratio", "error_rate"}
    assert "ticks" not in r.to_json() and "ticks" not in r.persisted()  # neither in the API nor the annotation

    long = _judged_rollout(timeline.TICKS * 4)
    assert len(long.ticks) <= timeline.TICKS
    assert long.ticks[-1].at == timeline.TICKS * 4
    assert long.ticks[0].decision == "start"  # markers survive the thinning; plain holds make room
    newest = [t.at for t in long.ticks[-timeline.TICKS // 4:]]
    assert newest == [float(x) for x in range(int(newest[0]), timeline.TICKS * 4 + 1)]  # recent: every tick
    older = [t.at for t in long.ticks[1:-timeline.TICKS // 4]]
    gaps = {b - a for a, b in zip(older, older[1:], strict=False)}
    assert older[0] <= 8 and max(gaps) <= 2 * min(gaps)  # the oldest ticks are still drawn, evenly thinner


def _finite(x: object) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None  # type: ignore[arg-type]


def test_a_judgements_points_keep_its_finite_numbers_and_drop_the_rest() -> None:
    """Infinities, NaN and None become None; a band or counts with one of them missing are missing whole;
    ints and numpy scalars are floats; the reason is kept for failures and warnings only."""
    ev = {"lower_pct": 1.0, "upper_pct": math.inf, "canary_errors": np.float64(2.0), "canary_requests": 10,
          "stable_errors": 1.0, "stable_requests": 20.0}
    results = (
        MetricResult("error_ratio", Verdict.FAIL, "failing", Action.ROLLBACK, anytime_p_value=np.float64(0.01),
                     adjusted_p_value=math.nan, canary=10, stable=-math.inf, limit=2.0, unit="%", evidence=ev),
        MetricResult("error_rate", Verdict.PASS, "passing", Action.ROLLBACK, canary=0.5, stable=None,
                     evidence={"lower_pct": 0.1, "upper_pct": 0.9, "canary_errors": math.nan}),
        MetricResult("cpu", Verdict.SKIPPED, "no data source", Action.WARN),
        MetricResult("latency_p95", Verdict.WARN, "warning", Action.WARN, canary=math.nan, limit=500, unit="ms"))
    points = timeline.Points(results)
    assert list(points) == [timeline.metric_point(m) for m in results if m.verdict is not Verdict.SKIPPED]
    fail, passed, warned = points
    assert (fail.canary, fail.stable, fail.limit, fail.anytime_p, fail.adjusted_p) == (10.0, None, 2.0, 0.01, None)
    assert fail.band is None and fail.counts == (2.0, 10.0, 1.0, 20.0) and fail.reason == "failing"
    assert fail._values()[3:5] == (None, None) and passed._values()[7:] == (None,) * 4  # kept whole or not at all
    assert all(type(x) is float for x in fail.counts)
    assert passed.band == (0.1, 0.9) and passed.counts is None and passed.reason is None
    assert (warned.canary, warned.limit, warned.reason, warned.unit) == (None, 500.0, "warning", "ms")
    for m, point in zip([m for m in results if m.verdict is not Verdict.SKIPPED], points, strict=True):
        assert (point.name, point.verdict, point.action) == (m.name, m.verdict.value, m.action.value)
        assert point.canary == _finite(m.canary) and point.stable == _finite(m.stable)


def test_the_ticks_of_all_canaries_stay_within_the_budget() -> None:
    per = [timeline.kept_per_rollout(n) for n in (1, 10, 100, 1000, 10_000, 100_000)]
    assert per[0] == per[1] == timeline.TICKS and per == sorted(per, reverse=True) and per[-1] == timeline.MIN_TICKS
    for n, keep in zip((100, 1000, 10_000), per[2:5], strict=True):
        assert keep == timeline.MIN_TICKS or n * keep * timeline.ENTRY_BYTES <= timeline.BUDGET
    long = _judged_rollout(100).ticks
    for keep in (1, 2, 5, 29):
        short = timeline.trimmed(long, keep)
        assert max(1, keep // 2) <= len(short) <= keep and short[-1] == long[-1] and set(short) <= set(long)
        assert keep == 1 or short[0] == long[0]  # the start marker stays; plain holds make room
        assert timeline.trimmed(short, keep) is short
        grown = timeline.appended(short, long[-1], keep)
        assert len(grown) <= keep and grown[-1].n == long[-1].n + 1


def test_the_controller_trims_each_canarys_ticks_to_its_share() -> None:
    """With more canaries than the budget allows TICKS each, a round's look at them trims their report ticks."""
    from test_tick_slots import _controller

    async def main(n: int) -> int:
        controller = await _controller(n)
        await controller.command("ns", "c0", "start")
        w = controller.workers["ns/c0"]
        w.rollout = replace(w.rollout, ticks=_judged_rollout(60).ticks)
        await controller._scan()
        await controller.stop()
        return len(w.rollout.ticks)

    assert asyncio.run(main(3)) == 61  # a few canaries: each keeps TICKS
    assert 1 <= asyncio.run(main(1500)) <= timeline.kept_per_rollout(1500) < 60


def _status(**extra: Any) -> dict[str, Any]:
    return {"namespace": "orion", "name": "auth-service", "route": "auth-service", "mesh": "istio",
            "phase": "paused", "weight": 10, "step": 0, "steps": [10, 50, 100], "started_at": 0.0,
            "paused_reason": f"alert CanaryLatencyHigherThanStable firing: {SCRIPT}",
            "last_decision": {"decision": "pause", "trigger": "alert", "at": 5.0,
                              "reasons": [f"alert CanaryLatencyHigherThanStable firing: {SCRIPT}"]},
            "history": [{"at": 0.0, "decision": "start", "trigger": "start", "weight": 10, "reasons": ["started"]},
                        {"at": 5.0, "decision": "pause", "trigger": "alert", "weight": 10, "reasons": [SCRIPT]}],
            **extra}


def test_strings_from_labels_alerts_and_config_are_shown_as_text() -> None:
    r = _judged_rollout(3)
    r, _ = ro.command(r, "pause", 5.0, trigger=ro.Trigger.ALERT, reason=SCRIPT)
    html = render_page(Report(title=f"orion/{SCRIPT}", status=_status(route=SCRIPT), ticks=r.ticks, alpha=0.05,
                              now=6.0))
    assert "<script" not in html.lower()
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in html
    index = render_index([_status(name=SCRIPT, namespace='"><img src=x>')])
    assert "<script" not in index.lower() and "<img" not in index
    assert "/ui/canaries/%22%3E%3Cimg%20src%3Dx%3E/%3Cscript%3E" in index  # the link's path is quoted too


def test_odd_saved_states_still_render() -> None:
    status = _status(history=[{"at": "yesterday", "decision": "start", "reasons": "one string"}, "junk",
                              {"decision": "hold", "weight": None, "reasons": None}],
                     last_decision={"decision": "hold", "at": None, "reasons": "a single reason"}, steps=[])
    html = render_page(Report(title="orion/auth-service", status=status, ticks=(), alpha=0.05))
    assert "a single reason" in html and "yesterday" in html


def test_a_page_without_ticks_says_so() -> None:
    html = render_page(Report(title="shop/cart", status={"phase": "idle", "weight": 0, "history": []}, ticks=(),
                              alpha=0.05))
    assert "No decision yet" in html and "No tick has been judged yet" in html


def test_analyze_report_writes_one_self_contained_page(tmp_path: Path) -> None:
    out = tmp_path / "bad.html"
    assert main(["analyze", "-i", str(EXAMPLES / "replay-bad-canary.json"), "--report", str(out)]) == 1
    html = out.read_text(encoding="utf-8")
    assert out.stat().st_size < 500_000
    assert not re.search(r"<script|<link|@import|url\(|https?://(?!www\.w3\.org/2000/svg)", html, re.I)
    assert 'data-kind="rollback"' in html and 'class="crossing" data-metric="error_ratio"' in html
    assert re.search(r'<tr class="fail" data-metric="error_ratio">.*ratio above 2× is significant', html)
    assert "prefers-color-scheme: dark" in html


def test_analyze_report_to_an_unwritable_place_is_an_input_error(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["analyze", "-i", str(EXAMPLES / "replay-good-canary.json"),
                 "--report", str(tmp_path / "missing" / "r.html")])
    assert code == 2 and "cannot write the report" in capsys.readouterr().err


@pytest.fixture
async def secured(aiohttp_client: Any) -> AsyncIterator[Stack]:
    async for s in _stack(aiohttp_client, api_token=API_TOKEN):
        yield s


async def test_ui_pages_are_served_like_the_get_api(secured: Stack) -> None:
    assert (await secured.post("orion", "auth-service", "start", token=API_TOKEN)).status == 200
    for _ in range(3):
        await secured.tick()
    index = await secured.client.get("/ui/")  # reads need no token, as GET /api/v1/canaries
    assert index.status == 200 and index.content_type == "text/html"
    assert "default-src 'none'" in index.headers["Content-Security-Policy"]
    body = await index.text()
    assert 'href="/ui/canaries/orion/auth-service"' in body and "progressing" in body and "shop/cart" in body
    page = await secured.client.get("/ui/canaries/orion/auth-service")
    assert page.status == 200
    html = await page.text()
    assert 'data-kind="start"' in html and "Error rate" in html and 'id="verdicts"' in html
    missing = await secured.client.get("/ui/canaries/orion/nope")
    assert missing.status == 404 and missing.content_type == "text/html"
