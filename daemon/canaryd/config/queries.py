"""Query templates and their one renderer.

Templates use Python ``str.format`` syntax; render them with `render_query`. The placeholders are
``{selector}`` (the arm's label matchers, e.g. ``job="auth-service-canary"``), ``{namespace}`` (the
canary's namespace), ``{deployment}`` (the arm's Deployment) and, in cpu/memory only, ``{window}`` (a
Prometheus duration such as ``30s``). Literal PromQL braces are doubled:
``http_requests_total{{{selector},status=~"5.."}}`` renders to
``http_requests_total{job="auth-service-canary",status=~"5.."}``. A single brace is rejected at load as
an unknown placeholder, so the mistake cannot reach Prometheus.

- ``requests``, ``errors``, ``successes``, ``latency_buckets`` are plain series selectors of counters
  (a metric name and/or matchers; no functions, no range). The Prometheus source wraps each as
  ``sum by (...) (increase(<rendered>[<window>]))`` (latency_buckets also by ``le``), so they may not
  use ``{window}``.
- ``cpu`` and ``memory`` are complete PromQL expressions returning the arm's utilisation in percent
  (0-100) over ``{window}``. They are unset by default, and an unset query's metric is skipped. For
  example, with cAdvisor and kube-state-metrics::

    100 * sum(rate(container_cpu_usage_seconds_total{{namespace="{namespace}",pod=~"{deployment}-.*"}}[{window}]))
      / sum(kube_pod_container_resource_limits{{namespace="{namespace}",pod=~"{deployment}-.*",resource="cpu"}})

- Every template uses ``{selector}`` or ``{deployment}``; otherwise both arms would read the same series.
  Any query but ``requests`` may be null, which skips that metric.
- ``latency_unit`` says what the ``le`` bounds of ``latency_buckets`` count: ``seconds`` (client
  libraries) or ``milliseconds`` (Istio, Linkerd). The judge always sees seconds.

A canary's ``queries:`` may instead name a preset (`PRESETS`): ``default`` (the client-library
``http_requests_total`` / ``http_request_duration_seconds``), ``istio`` (``istio_requests_total`` and
``istio_request_duration_milliseconds_bucket`` as the destination workload reports them) or ``linkerd``
(the proxy's inbound ``response_total`` and ``response_latency_ms_bucket``). The mesh presets select
each arm by its Deployment (``{deployment}`` in ``{namespace}``), so they need no selector of the
mesh's labels.
"""

from __future__ import annotations

import re
import string
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..analysis.durations import format_duration
from .kinds import _Invalid, _Kind, _show

_COUNTER_PLACEHOLDERS = ("selector", "namespace", "deployment")
_GAUGE_PLACEHOLDERS = ("selector", "namespace", "deployment", "window")
_SERIES_SELECTOR_RE = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*\s*(\{[^{}]*\})?|\{[^{}]*\})\s*")


def render_query(template: str, *, selector: str, namespace: str, deployment: str,
                 window: str | float = "") -> str:
    """Fill a validated query template. `window` may be seconds (formatted as a PromQL duration)."""
    if not isinstance(window, str):
        window = format_duration(window)
    return template.format(selector=selector, namespace=namespace, deployment=deployment, window=window)


@dataclass(frozen=True)
class _Template(_Kind):
    counter: bool  # counters are plain selectors, wrapped by the source; gauges are full expressions

    def placeholders(self) -> tuple[str, ...]:
        return _COUNTER_PLACEHOLDERS if self.counter else _GAUGE_PLACEHOLDERS

    def allowed(self) -> str:
        names = ", ".join("{" + p + "}" for p in self.placeholders())
        if self.counter:
            return (f"a series selector template such as http_requests_total{{{{{{selector}}}}}} "
                    f"(placeholders {names}; literal braces doubled)")
        return f"a PromQL expression template returning a percentage (placeholders {names}; literal braces doubled)"

    def json(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"\{(selector|deployment)\}"}

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise self.must(value)
        names = ", ".join("{" + p + "}" for p in self.placeholders())
        braces = "write literal PromQL braces as {{ and }}"
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as e:
            raise _Invalid(f"is not a valid template ({e}), got {_show(value)}; {braces}") from None
        used = set()
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in self.placeholders() or spec or conversion:
                shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
                raise _Invalid(f"uses unknown placeholder {shown}, got {_show(value)}; "
                               f"allowed placeholders are {names}; {braces}")
            used.add(name)
        if not used & {"selector", "deployment"}:
            raise _Invalid(f"must use {{selector}} or {{deployment}}, got {_show(value)}; "
                           "otherwise the stable and canary arms read the same series")
        if self.counter:
            rendered = render_query(value, selector='a="b"', namespace="ns", deployment="d")
            if not _SERIES_SELECTOR_RE.fullmatch(rendered):
                raise _Invalid(f"must be a plain series selector (metric{{matchers}}, no functions or range), "
                               f"got {_show(value)}; the daemon wraps it in increase(...[window])")
        return value


_COUNTER = _Template(counter=True)
_GAUGE = _Template(counter=False)
LATENCY_UNITS: dict[str, float] = {"seconds": 1.0, "milliseconds": 0.001}  # → the factor to seconds

_ISTIO = 'reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{deployment}"'
_LINKERD = 'direction="inbound",namespace="{namespace}",deployment="{deployment}"'
PRESETS: Mapping[str, Mapping[str, str | None]] = types.MappingProxyType({
    "default": types.MappingProxyType({}),  # every key's own default
    "istio": types.MappingProxyType({
        "requests": f"istio_requests_total{{{{{_ISTIO}}}}}",
        "errors": f'istio_requests_total{{{{{_ISTIO},response_code=~"5.."}}}}',
        "successes": f'istio_requests_total{{{{{_ISTIO},response_code=~"2.."}}}}',
        "latency_buckets": f"istio_request_duration_milliseconds_bucket{{{{{_ISTIO}}}}}",
        "latency_unit": "milliseconds",
    }),
    "linkerd": types.MappingProxyType({
        "requests": f"response_total{{{{{_LINKERD}}}}}",
        # Linkerd's own classification: a 5xx, or a gRPC error status, is a failure.
        "errors": f'response_total{{{{{_LINKERD},classification="failure"}}}}',
        "successes": f'response_total{{{{{_LINKERD},classification="success"}}}}',
        "latency_buckets": f"response_latency_ms_bucket{{{{{_LINKERD}}}}}",
        "latency_unit": "milliseconds",
    }),
})
"""Query presets by name: the keys they set; every other key keeps its default."""
