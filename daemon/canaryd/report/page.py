"""One rollout's report page: its events, error rates, latency and evidence on one time axis, and its verdicts.

Pure: takes the canary as the API gives it plus its tick entries, returns one self-contained HTML
document (inline SVG and CSS, no script). Every string that comes from a config, a label, an alert or
a reason is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import charts
from .svg import e
from .theme import document
from .timeline import TICKS, TickEntry, from_history

VERDICT_COLUMNS = ("metric", "verdict", "canary", "stable", "limit", "anytime p", "Holm-adjusted p", "reason")
ACTIVE = ("progressing", "paused", "promoting")


@dataclass(frozen=True)
class Report:
    title: str
    status: Mapping[str, Any]  # the canary as GET /api/v1/canaries/{namespace}/{name} gives it
    ticks: Sequence[TickEntry]
    alpha: float
    now: float | None = None  # the daemon's clock; None for a replay, whose axis ends at its last tick
    absolute_times: bool = True  # unix times (the daemon) rather than seconds from the start (a replay)
    links: tuple[tuple[str, str], ...] = field(default=())  # (href, text) shown above the title


def timeline_of(report: Report) -> list[TickEntry]:
    """The tick entries, preceded by the saved history's events from before them (a restarted daemon)."""
    ticks = list(report.ticks)
    first = ticks[0].at if ticks else float("inf")
    older = [h for h in from_history(report.status.get("history") or ()) if h.at < first and h.decision != "hold"]
    return older + ticks


def _texts(value: object) -> list[str]:
    """Reasons as a list of strings, whatever a saved state holds."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) or not isinstance(value, list | tuple) else [str(v) for v in value]


def when(report: Report, at: object, t0: float) -> str:
    if at is None:
        return "—"
    if isinstance(at, bool) or not isinstance(at, int | float):
        return str(at)
    rel = charts.relative(at - t0)
    if not report.absolute_times:
        return f"t={at:g}s ({rel})"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") + f" (+{rel})"


def fmt(x: object, unit: str = "") -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "—" if x is None else e(x)
    text = f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return e(text + (f" {unit}" if unit else ""))


def fmt_p(x: object) -> str:
    return f"{x:.2g}" if isinstance(x, int | float) and not isinstance(x, bool) else "—"


# ---------------------------------------------------------------------------------------------- sections


def _header(report: Report, t0: float) -> str:
    s = report.status
    links = " · ".join(f'<a href="{e(href)}">{e(text)}</a>' for href, text in report.links)
    steps = list(s.get("steps") or ())
    step = s.get("step", -1)
    where = f"step {step + 1} of {len(steps)} ({', '.join(f'{w:g} %' for w in steps)})" \
        if isinstance(step, int) and steps and step >= 0 else "not started"
    items = [("phase", f'<span class="phase phase-{e(s.get("phase", ""))}">{e(s.get("phase", "—"))}</span>'),
             ("weight", fmt(s.get("weight"), "%"))] + ([("position", e(where))] if steps else [])
    for key in ("route", "mesh"):
        if s.get(key):
            items.append((key, e(s[key])))
    items.append(("started", e(when(report, s.get("started_at"), t0))))
    if s.get("dry_run"):
        items.append(("mode", "dry run"))
    summary = "".join(f"<span>{e(k)}: <b>{v}</b></span>" for k, v in items)
    error = f'<p class="why rollback">route error: {e(s["error"])}</p>' if s.get("error") else ""
    paused = f'<p class="why">paused: {e(s["paused_reason"])}</p>' if s.get("paused_reason") else ""
    nav = f"<nav>{links}</nav>" if links else ""
    return f'{nav}<h1>{e(report.title)}</h1><div class="summary">{summary}</div>{error}{paused}'


def _why(report: Report, t0: float) -> str:
    last = report.status.get("last_decision")
    if not isinstance(last, Mapping):
        return '<p class="why">No decision yet.</p>'
    decision = str(last.get("decision", ""))
    reasons = "".join(f"<li>{e(r)}</li>" for r in _texts(last.get("reasons")))
    head = (f'last decision: <b>{e(decision)}</b> ({e(last.get("trigger", ""))}) at '
            f'{e(when(report, last.get("at"), t0))}')
    return f'<div class="why {e(decision)}" id="last-decision">{head}<ul>{reasons}</ul></div>'


def _legend(*items: tuple[str, str]) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i class="sw" style="background: var(--{e(color)})"></i>{e(text)}</span>' for color, text in items
    ) + "</div>"


def _charts(report: Report, entries: Sequence[TickEntry]) -> str:
    active = report.status.get("phase") in ACTIVE
    axis = charts.span(entries, report.now if active else None)
    out = ['<h2>Weight and events</h2><figure>', charts.weight_chart(entries, axis, report.status.get("weight")),
           '<figcaption>Canary weight over time. Markers: ▶ start or resume, ▲ advance, ❚❚ pause, ◆ promote, '
           '✖ rollback, a triangle on top for an alert. Hover a marker for its reasons.</figcaption></figure>']
    if not charts.has_values(entries):
        return "".join(out) + '<p class="empty">No tick has been judged yet: the charts of the numbers ' \
                              'appear after the first judgement.</p>'
    out += ['<h2>Error rate</h2><figure>', charts.error_chart(entries, axis),
            _legend(("canary", "canary, per interval"), ("stable", "stable, per interval"),
                    ("band", "canary's 95 % band over the step (what the limit test uses)"), ("limit", "limit")),
            '</figure><h2>Latency</h2><figure>', charts.latency_chart(entries, axis),
            _legend(("canary", "canary P95"), ("stable", "stable P95"), ("limit", "limit")),
            '<figcaption>P95 as the judge sees it: read from the histogram buckets over the step so far.'
            '</figcaption></figure><h2>Evidence</h2><figure>', charts.evidence_chart(entries, axis, report.alpha),
            f'<figcaption>Each rollback metric\'s anytime p-value after Holm\'s correction across the metrics, on a '
            f'log scale. It stays valid however often it is read; a metric fails once its line falls to '
            f'α = {report.alpha:g} (dotted) and its limit is exceeded. A circle marks each crossing.'
            '</figcaption></figure>']
    return "".join(out)


def final_metrics(report: Report) -> list[Mapping[str, Any]]:
    """The verdicts of the last decision, as the API gives them; else those of the last judged tick."""
    last = report.status.get("last_decision")
    if isinstance(last, Mapping) and last.get("metrics"):
        return [m for m in last["metrics"] if isinstance(m, Mapping)]
    judged = [t for t in report.ticks if t.judged and t.metrics]
    return [m.to_json() for m in judged[-1].metrics] if judged else []


def _verdicts(report: Report) -> str:
    rows = []
    for m in final_metrics(report):
        verdict = str(m.get("verdict", ""))
        unit = str(m.get("unit") or "")
        limit_unit = "×" if m.get("name") in ("error_ratio", "latency_ratio") else unit
        cells = [e(m.get("name", "")), f'<span class="v-{e(verdict)}">{e(verdict)}</span>',
                 fmt(m.get("canary"), unit), fmt(m.get("stable"), unit), fmt(m.get("limit"), limit_unit),
                 fmt_p(m.get("anytime_p_value")), fmt_p(m.get("adjusted_p_value")), e(m.get("reason") or "")]
        classes = ["", "", "n", "n", "n", "n", "n", ""]
        tds = "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for c, v in zip(classes, cells, strict=True))
        rows.append(f'<tr class="{e(verdict)}" data-metric="{e(m.get("name", ""))}">{tds}</tr>')
    if not rows:
        return '<h2>Verdicts</h2><p class="empty">No verdicts yet.</p>'
    head = "".join(f"<th>{c}</th>" for c in VERDICT_COLUMNS)
    return f'<h2>Verdicts</h2><table id="verdicts"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _runs(history: Sequence[object]) -> list[tuple[Mapping[str, Any], int]]:
    """The history with each run of holds in a row folded into its last one, and the run's length."""
    out: list[tuple[Mapping[str, Any], int]] = []
    for h in history:
        if not isinstance(h, Mapping):
            continue
        if out and h.get("decision") == "hold" and out[-1][0].get("decision") == "hold" \
                and out[-1][0].get("trigger") == h.get("trigger"):
            out[-1] = (h, out[-1][1] + 1)
        else:
            out.append((h, 1))
    return out


def _history(report: Report, t0: float) -> str:
    rows = []
    for h, count in _runs(report.status.get("history") or ()):
        at = h.get("at")
        decision = str(h.get("decision", "")) + (f" ×{count}" if count > 1 else "")
        shown = _texts(h.get("reasons"))[: 1 if count > 1 else None]  # a run of holds: the last one's first
        reasons = "<br>".join(e(r) for r in shown)
        rows.append(f'<tr class="{e(h.get("decision", ""))}"><td>{e(when(report, at, t0))}'
                    f'</td><td>{e(decision)}</td><td>{e(h.get("trigger", ""))}</td>'
                    f'<td class="n">{fmt(h.get("weight"), "%")}</td><td>{reasons}</td></tr>')
    if not rows:
        return ""
    head = "".join(f"<th>{c}</th>" for c in ("at", "decision", "trigger", "weight", "reasons"))
    return f'<h2>Decisions</h2><p class="muted">As the API lists them; a run of holds is one row, with ' \
           f'the time and first reason of its last.</p><table id="history"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_page(report: Report) -> str:
    entries = timeline_of(report)
    t0 = entries[0].at if entries else 0.0
    footer = (f'<p class="muted">The charts hold at most {TICKS} ticks of the rollout (older ones thinned; fewer when '
              f'the daemon runs many canaries), kept in memory (a restart starts them again; the decisions above are '
              f'saved on the route). Reload for new ticks.</p>')
    body = (_header(report, t0) + _why(report, t0) + _charts(report, entries) + _verdicts(report)
            + _history(report, t0) + footer)
    return document(f"{report.title}: canary report", body)
