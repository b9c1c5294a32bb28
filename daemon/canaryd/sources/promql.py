"""PromQL string literals and label matchers: parsing a selector's equality matchers, quoting a value,
and the anchored regex that matches exactly a set of values (for merging many arms into one query); and
a target's query: its template, rendered for its selector, summed by the labels that split the answer."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from canaryd.config import render_query

if TYPE_CHECKING:
    from canaryd.sources.query_plans import ArmTarget

_MATCHER_RE = re.compile(
    r"""\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)\s*(,|$)""",
    re.DOTALL,
)
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"', "'": "'"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3}|.)", re.DOTALL)


def _unquote(literal: str) -> str | None:
    """The value of a PromQL string literal; None for an escape we do not understand."""
    quote, body = literal[0], literal[1:-1]
    if quote == "`":
        return body
    bad = False

    def one(m: re.Match[str]) -> str:
        nonlocal bad
        esc = m[1]
        if esc in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[esc]
        if esc[0] in "xuU" and len(esc) > 1:
            return chr(int(esc[1:], 16))
        if len(esc) == 3 and esc.isdigit():
            return chr(int(esc, 8))
        bad = True
        return ""

    value = _ESCAPE_RE.sub(one, body)
    return None if bad else value


def equality_matchers(selector: str) -> tuple[tuple[str, str], ...] | None:
    """`job="a", namespace='orion'` → (("job", "a"), ("namespace", "orion")), sorted by label.

    None when the selector is anything else (a regex or negative matcher, a repeated label, syntax we do
    not parse): such a selector is queried on its own, never merged.
    """
    pos, found = 0, {}
    text = selector.strip()
    while pos < len(text):
        m = _MATCHER_RE.match(text, pos)
        if m is None or m[2] != "=" or m[1] in found:
            return None
        value = _unquote(m[3])
        if value is None:
            return None
        found[m[1]] = value
        pos = m.end()
    return tuple(sorted(found.items())) or None


_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")


def _promql_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def regex_any(values: Sequence[str]) -> str:
    """A PromQL string literal holding a (fully anchored) regex that matches exactly `values`."""
    return _promql_string("|".join(_RE2_SPECIAL.sub(r"\\\1", v) for v in sorted(set(values))))


def render_template(template: str, metric: str, target: ArmTarget, *, selector: str, window: str = "") -> str:
    """`template` with the target's placeholders filled in. Raises ValueError naming the metric and target."""
    try:
        return render_query(template, selector=selector, namespace=target.namespace,
                            deployment=target.deployment, window=window)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"query template for {metric!r} of {target.key} ({target.arm}) is invalid: {e!r}; "
            f"placeholders are {{selector}}, {{namespace}}, {{deployment}}, literal braces doubled"
        ) from e


def template_of(metric: str, target: ArmTarget, queries: Mapping[str, str | None]) -> str | None:
    """The target's own template for `metric` if it has one, else the shared one (None: not queried)."""
    if target.queries is not None and metric in target.queries:
        return target.queries[metric]
    return queries.get(metric)


def sum_by(series: str, by: tuple[str, ...], window: str | None) -> str:
    """`series` summed by `by`: its current totals, or (with a window) its increase over that window."""
    if window is None:  # the counters' current totals; the caller takes differences between ticks
        return f"sum by ({', '.join(by)}) ({series})"
    return f"sum by ({', '.join(by)}) (increase({series}[{window}]))"
