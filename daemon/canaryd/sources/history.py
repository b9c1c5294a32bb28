"""Stable's counts over the intervals before a rollout starts, for the judge's first ticks.

One tick cannot show whether a service's errors come in bursts; stable's last intervals can. The judge
takes them (`judge.with_history`): a binomial-looking history lets the first ticks count in full, a bursty
one discounts them from the start. Read with two range queries (requests, errors) over stable's counter
totals, differenced per interval as the tick's read is: exact counts. An interval with a missing point or a
counter that went down (a pod restarted) is left out rather than guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..analysis.snapshot import ArmSnapshot
from .prometheus import ArmTarget, PrometheusClient, RangeSeries
from .promql import render_template, sum_by, template_of

HISTORY_INTERVALS = 20  # 10 minutes at the default 30 s interval: enough ticks to see bursts


def _totals(series: list[RangeSeries]) -> dict[int, float]:
    """Each point's value by its time in whole milliseconds (Prometheus' own resolution)."""
    # `sum by ()` gives one series at most; several would be a query that does not sum (own templates).
    if len(series) != 1:
        return {}
    return {round(t * 1000): v for t, v in series[0].points}


def _differences(requests: dict[int, float], errors: dict[int, float], times: list[int]) -> list[ArmSnapshot]:
    out = []
    for a, b in zip(times, times[1:], strict=False):
        if a not in requests or b not in requests:
            continue
        # No 5xx series while requests are counted means none was served yet (client libraries create it then).
        dn, dx = requests[b] - requests[a], errors.get(b, 0.0) - errors.get(a, 0.0)
        if dn < 0 or dx < 0 or dx > dn or not (math.isfinite(dn) and math.isfinite(dx)):
            continue
        out.append(ArmSnapshot(requests=dn, errors=dx))
    return out


async def fetch_history(client: PrometheusClient, stable: ArmTarget, queries: Mapping[str, str | None], *,
                        interval: float, end: float, count: int = HISTORY_INTERVALS) -> list[ArmSnapshot]:
    """Stable's (requests, errors) increments over the `count` intervals before `end`, oldest first.

    Raises SourceError when Prometheus fails; [] when stable has no requests or no errors query.
    """
    exprs = {}
    for metric in ("requests", "errors"):
        template = template_of(metric, stable, queries)
        if template is None:
            return []
        exprs[metric] = sum_by(render_template(template, metric, stable, selector=stable.selector), (), None)
    # Points fall at start + i·step exactly when both are whole milliseconds, as Prometheus keeps them.
    start_ms, step_ms = round((end - count * interval) * 1000), round(interval * 1000)
    start, times = start_ms / 1000, [start_ms + i * step_ms for i in range(count + 1)]
    requests, errors = [_totals(await client.query_range(exprs[m], start, times[-1] / 1000, step_ms / 1000))
                        for m in ("requests", "errors")]
    return _differences(requests, errors, times)
