"""A stand-alone fake service exporter for tests, benchmarks and demos.

    python tests/exporter.py --port 9101 --job auth-service-canary --label namespace=orion \
        --rps 200 --error-rate 0.01 --latency-median 0.05 --latency-sigma 0.5

It simulates the traffic of one or more services (one per `--job`) and serves, at GET /metrics in the
Prometheus text format:
- `http_requests_total{job,status}` with status "200", "404" (client errors) and "500" (server errors);
- `http_request_duration_seconds` as a histogram with the usual client-library buckets;
- `service_cpu_utilisation_percent` / `service_memory_utilisation_percent` gauges when set.
Each series carries the labels `job` and every `--label`; scrape it with `honor_labels: true`.

Traffic is deterministic: after t seconds at r requests/s there are floor(r·t) more requests, of
which floor(error_rate·n) are 500s, and each latency bucket holds floor(n·CDF(le)) of them, where
CDF is that of a lognormal with the configured median and sigma. So two scrapes a known time apart
differ by a known amount, and the counters never go down.

POST /control with JSON {"job"?: name, "rps"?, "error_rate"?, "client_error_rate"?, "latency_median"?,
"latency_sigma"?, "cpu"?, "memory"?} changes the simulation from now on (all jobs when "job" is
absent). Rates are fractions 0..1, latencies in seconds. GET /state returns the exact counters.
Only the standard library is used, so it starts fast.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
SETTING_KEYS = ("rps", "error_rate", "client_error_rate", "latency_median", "latency_sigma", "cpu", "memory")


@dataclass(frozen=True)
class Settings:
    rps: float = 100.0
    error_rate: float = 0.0  # fraction of requests answered 500
    client_error_rate: float = 0.0  # fraction answered 404
    latency_median: float = 0.05  # seconds
    latency_sigma: float = 0.5  # of log(latency)
    cpu: float | None = None  # percent
    memory: float | None = None  # percent

    def validated(self) -> Settings:
        problems = []
        if not (math.isfinite(self.rps) and self.rps >= 0):
            problems.append(f"rps must be >= 0, got {self.rps}")
        for name in ("error_rate", "client_error_rate"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                problems.append(f"{name} is a fraction 0..1, got {v}")
        if self.error_rate + self.client_error_rate > 1:
            problems.append("error_rate + client_error_rate must be <= 1")
        if not (math.isfinite(self.latency_median) and self.latency_median > 0):
            problems.append(f"latency_median must be > 0 seconds, got {self.latency_median}")
        if not (math.isfinite(self.latency_sigma) and self.latency_sigma >= 0):
            problems.append(f"latency_sigma must be >= 0, got {self.latency_sigma}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def latency_cdf(self, x: float) -> float:
        if math.isinf(x):
            return 1.0
        if self.latency_sigma == 0:
            return 1.0 if x >= self.latency_median else 0.0
        z = (math.log(x) - math.log(self.latency_median)) / (self.latency_sigma * math.sqrt(2))
        return 0.5 * (1 + math.erf(z))

    def latency_mean(self) -> float:
        return self.latency_median * math.exp(self.latency_sigma**2 / 2)


@dataclass(frozen=True)
class Counts:
    requests: int = 0
    errors: int = 0  # 500
    client_errors: int = 0  # 404
    buckets: tuple[int, ...] = ()  # cumulative, one per finite bucket bound; +Inf is `requests`
    sum: float = 0.0


class Service:
    """One simulated service. Counts are a pure function of time within a phase (between changes)."""

    def __init__(self, job: str, labels: Mapping[str, str], settings: Settings, buckets: Sequence[float]):
        self.job = job
        self.labels = {**labels, "job": job}
        self.bucket_bounds = tuple(buckets)
        self._lock = threading.Lock()
        self._settings = settings.validated()
        self._base = Counts(buckets=(0,) * len(self.bucket_bounds))
        self._t0 = time.monotonic()
        self._real0 = 0.0  # real-valued requests at phase start (keeps the fractional carry)
        # Made once: a scrape of 10,000 services renders 200,000 series, and formatting their labels and
        # latency CDFs anew each time took most of the exporter's CPU, on the cores the daemon shares.
        self.status_labels = {st: _labels({**self.labels, "status": st}) for st in ("200", "404", "500")}
        self.le_labels = tuple(_labels({**self.labels, "le": _fmt(le)}) for le in self.bucket_bounds)
        self.base_labels = _labels(self.labels)
        self._cdfs: tuple[Settings, tuple[float, ...]] | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    def _counts_at(self, now: float) -> tuple[Counts, float]:
        s = self._settings
        real = self._real0 + s.rps * max(0.0, now - self._t0)
        n = math.floor(real) - math.floor(self._real0)  # requests in this phase
        errors = math.floor(n * s.error_rate)
        # Client errors are a share of the non-5xx ones, so each status counter is monotone on its own.
        rest = n - errors
        client_share = s.client_error_rate / (1 - s.error_rate) if s.error_rate < 1 else 0.0
        client = math.floor(rest * min(1.0, client_share))
        b = self._base
        if self._cdfs is None or self._cdfs[0] is not s:
            self._cdfs = (s, tuple(s.latency_cdf(le) for le in self.bucket_bounds))
        buckets = tuple(base + math.floor(n * cdf) for base, cdf in zip(b.buckets, self._cdfs[1], strict=True))
        counts = Counts(
            requests=b.requests + n,
            errors=b.errors + errors,
            client_errors=b.client_errors + client,
            buckets=buckets,
            sum=b.sum + n * s.latency_mean(),
        )
        return counts, real

    def counts(self) -> Counts:
        with self._lock:
            return self._counts_at(time.monotonic())[0]

    def change(self, **changes: float | None) -> Settings:
        with self._lock:
            new = replace(self._settings, **changes).validated()
            now = time.monotonic()
            self._base, self._real0 = self._counts_at(now)
            self._t0 = now
            self._settings = new
            return new


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))


def _fmt(v: float) -> str:
    return repr(float(v)) if not math.isinf(v) else ("+Inf" if v > 0 else "-Inf")


def render(services: Sequence[Service]) -> str:
    """The Prometheus text exposition (format 0.0.4) of all services."""
    snap = [(svc, svc.counts(), svc.settings) for svc in services]
    out = [
        "# HELP http_requests_total Requests handled, by HTTP status.",
        "# TYPE http_requests_total counter",
    ]
    for svc, c, _ in snap:
        ok = c.requests - c.errors - c.client_errors
        for status, v in (("200", ok), ("404", c.client_errors), ("500", c.errors)):
            out.append(f"http_requests_total{{{svc.status_labels[status]}}} {v}")
    out += [
        "# HELP http_request_duration_seconds Request latency.",
        "# TYPE http_request_duration_seconds histogram",
    ]
    for svc, c, _ in snap:
        for labels, v in zip(svc.le_labels, c.buckets, strict=True):
            out.append(f"http_request_duration_seconds_bucket{{{labels}}} {v}")
        base = svc.base_labels
        out.append(f'http_request_duration_seconds_bucket{{{base},le="+Inf"}} {c.requests}')
        out.append(f"http_request_duration_seconds_sum{{{base}}} {c.sum!r}")
        out.append(f"http_request_duration_seconds_count{{{base}}} {c.requests}")
    for name, attr, help_ in (
        ("service_cpu_utilisation_percent", "cpu", "CPU use, percent of the limit."),
        ("service_memory_utilisation_percent", "memory", "Memory use, percent of the limit."),
    ):
        rows = [(svc, getattr(s, attr)) for svc, _, s in snap if getattr(s, attr) is not None]
        if rows:
            out += [f"# HELP {name} {help_}", f"# TYPE {name} gauge"]
            out += [f"{name}{{{svc.base_labels}}} {_fmt(v)}" for svc, v in rows]
    return "\n".join(out) + "\n"


def state(services: Sequence[Service]) -> dict[str, object]:
    result: dict[str, object] = {}
    for svc in services:
        c = svc.counts()
        result[svc.job] = {
            "labels": svc.labels,
            "settings": asdict(svc.settings),
            "requests": c.requests,
            "status": {"200": c.requests - c.errors - c.client_errors, "404": c.client_errors, "500": c.errors},
            "buckets": [[le, v] for le, v in zip(svc.bucket_bounds, c.buckets, strict=True)]
            + [["+Inf", c.requests]],
            "sum": c.sum,
        }
    return result


def make_handler(services: Mapping[str, Service]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass  # one line per scrape would drown the test logs

        def _send(self, status: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _json(self, status: int, obj: object) -> None:
            self._send(status, json.dumps(obj), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, render(list(services.values())), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/state":
                self._json(200, state(list(services.values())))
            elif path in ("/", "/healthz", "/-/ready"):
                self._send(200, "ok\n", "text/plain")
            else:
                self._json(404, {"error": f"no such path {path}; try /metrics, /state or POST /control"})

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            if self.path.split("?", 1)[0] != "/control":
                self._json(404, {"error": "POST /control only"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                job = body.pop("job", None)
                unknown = sorted(set(body) - set(SETTING_KEYS))
                if unknown:
                    raise ValueError(f"unknown keys {unknown}; allowed: job, {', '.join(SETTING_KEYS)}")
                changes = {k: (None if v is None else float(v)) for k, v in body.items()}
                if job is None:
                    targets = list(services.values())
                elif job in services:
                    targets = [services[job]]
                else:
                    raise ValueError(f"unknown job {job!r}; known: {sorted(services)}")
                # Validate everything first so a bad request changes nothing.
                for svc in targets:
                    replace(svc.settings, **changes).validated()
                result = {svc.job: asdict(svc.change(**changes)) for svc in targets}
            except (ValueError, TypeError) as e:
                self._json(400, {"error": str(e)})
                return
            self._json(200, {"jobs": result})

    return Handler


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Simulated service exporter (http_requests_total, latency histogram).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    p.add_argument("--job", "--job-label", dest="jobs", action="append", default=[],
                   help="value of the job label; repeat to simulate several services (default: service)")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="extra label on every series, e.g. namespace=orion (repeatable)")
    p.add_argument("--rps", type=float, default=100.0)
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction of 500s, 0..1")
    p.add_argument("--client-error-rate", type=float, default=0.0, help="fraction of 404s, 0..1")
    p.add_argument("--latency-median", type=float, default=0.05, help="seconds")
    p.add_argument("--latency-sigma", type=float, default=0.5, help="lognormal sigma")
    p.add_argument("--cpu", type=float, default=None, help="percent; the gauge is absent when unset")
    p.add_argument("--memory", type=float, default=None, help="percent; the gauge is absent when unset")
    p.add_argument("--buckets", default=",".join(map(str, DEFAULT_BUCKETS)), help="comma-separated bounds")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        labels = dict(kv.split("=", 1) for kv in args.label)
        buckets = sorted({float(b) for b in args.buckets.split(",") if b.strip()})
        if not buckets or any(not math.isfinite(b) for b in buckets):
            raise ValueError("--buckets needs finite numbers")
        settings = Settings(
            rps=args.rps, error_rate=args.error_rate, client_error_rate=args.client_error_rate,
            latency_median=args.latency_median, latency_sigma=args.latency_sigma, cpu=args.cpu, memory=args.memory,
        ).validated()
    except ValueError as e:
        print(f"exporter: {e}", file=sys.stderr)
        return 2
    jobs = args.jobs or ["service"]
    services = {job: Service(job, labels, settings, buckets) for job in dict.fromkeys(jobs)}
    server = ThreadingHTTPServer((args.host, args.port), make_handler(services))
    server.daemon_threads = True
    print(f"listening on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
