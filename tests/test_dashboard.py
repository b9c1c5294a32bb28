"""deploy/grafana/canaryd.json: its structure, and every query in it run against a real Prometheus.

The Prometheus loads rules/ and scrapes tests/exporter.py (a canary and a stable arm of one service)
and canaryd's own metrics (canaryd.metrics.Metrics on a fresh registry, served on loopback), so each
panel's query must not only parse but also return series: a misspelt metric or label shows up as
an empty panel here rather than in someone's Grafana.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from servers import HOST, PrometheusServer, ServerError

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = ROOT / "deploy" / "grafana" / "canaryd.json"
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
NAMESPACE, CANARY = "orion", "auth-service"

# Grafana's built-in interval variables, as Grafana would expand them for a short range.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300"}
# Queries allowed to be empty in a test that lasts seconds: alerts need their `for` to pass.
MAY_BE_EMPTY = re.compile(r"\bALERTS\{")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_PATH.read_text())


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and annotation query."""
    out = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for ann in dashboard["annotations"]["list"]:
        if "expr" in ann:
            out.append((f"annotation {ann['name']!r}", ann["expr"]))
    return out


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Expand $var, ${var}, ${var:format} and [[var]] as Grafana does, for the given values."""
    values = {**BUILTINS, **variables}

    def value(m: re.Match[str]) -> str:
        name = m.group("a") or m.group("b") or m.group("c")
        if name not in values:
            raise AssertionError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    pattern = r"\$\{(?P<a>\w+)(?::\w+)?\}|\[\[(?P<b>\w+)\]\]|\$(?P<c>[A-Za-z_]\w*)"
    return re.sub(pattern, value, expr)


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


# --------------------------------------------------------------------------------------------------
# Structure

def test_panels_are_well_formed() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "canaryd"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    boxes = []
    for panel in _panels(dashboard):
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        boxes.append((panel["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
            assert not overlap, f"panels {a[0]!r} and {b[0]!r} overlap"


def test_template_variables() -> None:
    variables = _variables(_dashboard())
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["namespace"]["query"]["query"] == "label_values(canaryd_canary_weight, namespace)"
    assert variables["canary"]["query"]["query"] == 'label_values(canaryd_canary_weight{namespace=~"$namespace"}, canary)'
    for name in ("namespace", "canary"):
        assert variables[name]["multi"] and variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def test_the_panels_the_issue_asks_for() -> None:
    exprs = " ".join(e for _, e in _queries(_dashboard()))
    for needed in (
        "canaryd_canary_weight", "canaryd_canary_phase", "canaryd_decisions_total", "canaryd_rollbacks_total",
        "canaryd_metric_ratio", "canaryd_metric_p_value", "canaryd_metric_verdict", "canaryd_alerts_received_total",
        "canary:error_rate:5m", "stable:error_rate:5m", "canary:success_rate:5m", "stable:success_rate:5m",
        "canary:latency_p95_ms:5m", "stable:latency_p95_ms:5m", "canary:latency_p99_ms:5m", "stable:latency_p99_ms:5m",
    ):
        assert needed in exprs, f"no panel queries {needed}"
    # canary-scoped metrics follow the template variables
    for where, expr in _queries(_dashboard()):
        for metric in re.findall(r"(canaryd_\w+|(?:canary|stable):\w+:5m)\{([^}]*)\}", expr):
            assert 'namespace=~"$namespace"' in metric[1], f"{where}: {metric[0]} ignores $namespace"


def test_substitution() -> None:
    assert substitute('x{a=~"$namespace",b=~"${canary}"}[$__rate_interval]', {"namespace": ".*", "canary": "c"}) == (
        'x{a=~".*",b=~"c"}[1m]'
    )
    with pytest.raises(AssertionError, match="unknown variable"):
        substitute("x{a=~\"$nope\"}", {})


# --------------------------------------------------------------------------------------------------
# Every query against a real Prometheus

class _MetricsServer:
    """canaryd's /metrics (its real Metrics class and renderer) on a loopback port, in a thread."""

    def __init__(self, body: Callable[[], bytes]):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                data = body()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.address = f"{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> _MetricsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# The canary of the default ("basic") metrics detail; a second canaryd, in full detail, exports FULL_CANARY.
FULL_CANARY = f"{CANARY}-full"
DETAIL_ONLY = re.compile(r"\bcanaryd_metric_(p_value|ratio)\b")  # no series in basic detail


def _canaryd_metrics(detail: str = "basic", canary: str = CANARY) -> tuple[Callable[[], bytes], Any] | None:
    """A populated canaryd registry's exposition and its Metrics, or None while canaryd.metrics does not
    exist."""
    try:
        from prometheus_client import CollectorRegistry

        from canaryd.metrics import MetricObservation, Metrics, render
    except ImportError:
        return None
    registry = CollectorRegistry()
    m = Metrics(registry, detail=detail)
    m.set_phase(NAMESPACE, canary, "progressing")
    m.set_weight(NAMESPACE, canary, 25)
    m.observe_decision(NAMESPACE, canary, "advance", [
        MetricObservation("error_rate", "pass", 0.4, 1.1),
        MetricObservation("latency_p95", "fail", 0.001, 1.9),
    ])
    m.router_update(NAMESPACE, canary, "ok")
    m.alert_received("CanaryHighErrorRate", "firing", "rollback")
    m.prometheus_error("timeout")
    m.set_leader(True)
    m.observe_analysis(0.02)
    return (lambda: render(registry)[0]), m


def test_panels_that_need_full_detail_say_so() -> None:
    """canaryd_metric_p_value and canaryd_metric_ratio have series only with server.metrics_detail: full."""
    for panel in _panels(_dashboard()):
        if any(DETAIL_ONLY.search(t["expr"]) for t in panel.get("targets", [])):
            assert "server.metrics_detail: full" in panel["description"], panel["title"]


def _run(prom: PrometheusServer, path: str, **params: str) -> tuple[list[Any] | None, str | None]:
    """(result, None) on success, (None, error) when Prometheus refuses the query."""
    try:
        return list(prom.api(path, **params)["result"]), None
    except urllib.error.HTTPError as e:
        return None, f"HTTP {e.code}: {e.read().decode(errors='replace')}"
    except ServerError as e:
        return None, str(e)


def test_every_query_runs_against_real_prometheus(
    exporter_factory: Callable[..., Any], prometheus_factory: Callable[..., PrometheusServer]
) -> None:
    exporter = exporter_factory(
        jobs=[f"{CANARY}-canary", f"{CANARY}-stable"], labels={"namespace": NAMESPACE}, rps=500, error_rate=0.002
    )
    exporter.control(job=f"{CANARY}-canary", error_rate=0.08, latency_median=0.09)
    canaryd = _canaryd_metrics()
    full = _canaryd_metrics("full", FULL_CANARY)
    server = _MetricsServer(canaryd[0]) if canaryd is not None else None
    full_server = _MetricsServer(full[0]) if full is not None else None
    extra = []
    if server is not None and full_server is not None:
        extra.append({"job_name": "canaryd", "honor_labels": True, "static_configs": [{"targets": [server.address]}]})
        extra.append({"job_name": "canaryd-full", "honor_labels": True,
                      "static_configs": [{"targets": [full_server.address]}]})
    try:
        if server is not None and full_server is not None:
            server.__enter__()
            full_server.__enter__()
        prom = prometheus_factory([exporter.address], rule_files=RULE_FILES, extra_scrape_configs=extra)
        prom.wait_for_targets_up(count=1 + len(extra))
        if canaryd is not None:
            # a rollback and a promotion after Prometheus has seen the counters at 0, as in real life,
            # so that increase() and the annotations find them
            prom.wait_for_samples(f'canaryd_rollbacks_total{{trigger="alert",canary="{FULL_CANARY}"}}')
            prom.wait_for_samples(f'canaryd_rollbacks_total{{trigger="alert",canary="{CANARY}"}}')
            for m, name in ((canaryd[1], CANARY), (full[1], FULL_CANARY)):  # type: ignore[index]
                m.rollback(NAMESPACE, name, "alert")
                m.promotion(NAMESPACE, name)
            prom.wait_for_samples(f'increase(canaryd_rollbacks_total{{trigger="alert",canary="{CANARY}"}}[1m]) > 0')
            prom.wait_for_samples(f'increase(canaryd_rollbacks_total{{trigger="alert",canary="{FULL_CANARY}"}}[1m]) > 0')
        prom.wait_for_samples(f'canary:error_rate:5m{{canary="{CANARY}"}} > 0', timeout=30)
        prom.wait_for_samples(f'stable:error_rate:5m{{canary="{CANARY}"}} > 0', timeout=30)
        dashboard = _dashboard()

        # the template variables find the canary
        for name, label in (("namespace", NAMESPACE), ("canary", CANARY)):
            query = _variables(dashboard)[name]["query"]["query"]
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
            assert m, query
            selector = substitute(m.group(1), {"namespace": ".*", "canary": ".*"})
            values = prom.api(f"label/{m.group(2)}/values", **{"match[]": selector})
            if server is not None:
                assert label in values, f"${name} would offer {values}"

        # every query: accepted as an instant and as a range query, and finds series
        now = time.time()
        failures, empty = [], []
        for where, expr in _queries(dashboard):
            query = substitute(expr, {"namespace": ".*", "canary": ".*"})
            instant, err = _run(prom, "query", query=query)
            if err:
                failures.append(f"{where}: {err}\n  {query}")
                continue
            _, err = _run(prom, "query_range", query=query, start=str(now - 30), end=str(now), step="1")
            if err:
                failures.append(f"{where} (range): {err}\n  {query}")
                continue
            needs_canaryd = "canaryd_" in query
            if not instant and not MAY_BE_EMPTY.search(query) and (server is not None or not needs_canaryd):
                empty.append(f"{where}: {query}")
        assert not failures, "queries Prometheus refused:\n" + "\n".join(failures)
        assert not empty, "queries that found no series (misspelt metric or label?):\n" + "\n".join(empty)

        # the default detail: every query finds the basic canary's series, but those of the panels that
        # say they need full detail (test_panels_that_need_full_detail_say_so)
        if server is not None:
            empty = []
            for where, expr in _queries(dashboard):
                query = substitute(expr, {"namespace": ".*", "canary": CANARY})
                if not prom.query(query) and not MAY_BE_EMPTY.search(query) and not DETAIL_ONLY.search(query):
                    empty.append(f"{where}: {query}")
            assert not empty, "queries that find nothing in the default metrics detail:\n" + "\n".join(empty)

        # the canary/stable panels read what the exporter serves: 8 % errors against 0.2 %
        panels = {p["title"]: p for p in _panels(dashboard)}
        got = {}
        for target in panels["Error rate (5xx)"]["targets"]:
            (row,) = prom.query(substitute(target["expr"], {"namespace": NAMESPACE, "canary": CANARY}))
            assert row["metric"] == {"__name__": row["metric"]["__name__"], "namespace": NAMESPACE, "canary": CANARY}
            got[row["metric"]["__name__"]] = float(row["value"][1])
        assert got["canary:error_rate:5m"] == pytest.approx(8, abs=0.5)
        assert got["stable:error_rate:5m"] == pytest.approx(0.2, abs=0.1)
    finally:
        if server is not None and full_server is not None:
            server.__exit__()
            full_server.__exit__()
