"""The report index: every configured canary with its phase, weight and last decision, linked to its page."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from .svg import e
from .theme import document


def page_path(namespace: str, name: str) -> str:
    return f"/ui/canaries/{quote(namespace, safe='')}/{quote(name, safe='')}"


def _row(c: Mapping[str, Any]) -> str:
    ns, name = str(c.get("namespace", "")), str(c.get("name", ""))
    last = c.get("last_decision") if isinstance(c.get("last_decision"), Mapping) else None
    if last is None:
        decision = '<span class="muted">none yet</span>'
    else:
        at = last.get("at")
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") \
            if isinstance(at, int | float) and not isinstance(at, bool) else ""
        first = next(iter(last.get("reasons") or ()), "")
        decision = (f'<b>{e(last.get("decision", ""))}</b> ({e(last.get("trigger", ""))}) '
                    f'<span class="muted">{e(stamp)}</span><br>{e(first)}')
    phase = str(c.get("phase", ""))
    weight = c.get("weight")
    return (f'<tr><td><a href="{e(page_path(ns, name))}">{e(ns)}/{e(name)}</a></td>'
            f'<td><span class="phase phase-{e(phase)}">{e(phase)}</span></td>'
            f'<td class="n">{"—" if weight is None else e(weight) + " %"}</td><td>{decision}</td></tr>')


def render_index(canaries: Iterable[Mapping[str, Any]], *, title: str = "canaryd: canaries") -> str:
    rows = "".join(_row(c) for c in canaries)
    table = ('<table id="canaries"><thead><tr><th>canary</th><th>phase</th><th>weight</th>'
             f'<th>last decision</th></tr></thead><tbody>{rows}</tbody></table>' if rows
             else '<p class="empty">No canary is configured.</p>')
    body = (f"<h1>{e(title)}</h1><p class=\"muted\">Every configured canary; open one for its report. "
            "Reload for news.</p>" + table)
    return document(title, body)
