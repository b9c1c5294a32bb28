"""Soak: bad and good input at 200 requests/s against a real `canaryd run` for N minutes.

    python bench/soak.py [--minutes 30] [--warmup 5] [--rate 200] [--canaries 200]

Not part of `make test`. Self-contained: it starts two exporters (tests/exporter.py: 200 services,
stable at 95 rps, canary at 5 rps), a real Prometheus scraping them every 5 s, and `canaryd run` in
dry-run mode (`kubernetes.enabled: false`, webhook and API tokens set) with one canary per service,
all started and progressing (5 rps never reaches min_requests, and the step lasts hours, so each
canary is judged every 5 s for the whole run). Then, at `--rate` requests a second, a mix of
- valid webhooks that change nothing: resolved alerts, alerts for unknown canaries, and alert names
  without a rule (a new name each time: the alertname label must not grow);
- invalid webhooks: bad or missing or non-UTF-8 bearer tokens, bodies that are not JSON or not
  Alertmanager's, lone UTF-16 surrogates, over 1 MiB, and HTTP requests aiohttp cannot parse;
- API calls: reading canaries, pause then resume (valid), unknown canaries, verbs and methods, missing
  tokens; and GET /metrics (about twice a second).
Every answer's status is checked against the README's HTTP API (200 400 401 404 405 409 413 503);
any other is counted as unexpected. Each minute: the daemon's RSS and open file descriptors, the
answers by status, the canaries still progressing and the ERROR lines in its log. At the end:
"RSS growth after the first 5 minutes: X %" (from the end of `--warmup` to the end; target <= 10 %).
Exit 0 when the target holds, nothing unexpected was answered, the daemon logged no ERROR and every
canary is still progressing; else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import ExporterProcess, PrometheusServer, free_port, missing_binaries, wait_until  # noqa: E402

NAMESPACE = "soak"
WEBHOOK_TOKEN = "soak-webhook-token"
API_TOKEN = "soak-api-token"
DOCUMENTED = frozenset({200, 400, 401, 404, 405, 409, 413, 503})
RSS_TARGET_PERCENT = 10.0
STABLE_RPS, CANARY_RPS = 95.0, 5.0
MAX_IN_FLIGHT = 64


def service(i: int) -> str:
    return f"svc-{i}"


def daemon_config(port: int, prometheus_url: str, n: int, tokens: Path) -> dict[str, Any]:
    canaries = [{"name": service(i), "namespace": NAMESPACE, "route": service(i),
                 "stable": {"deployment": f"{service(i)}-stable", "selector": f'job="{service(i)}-stable"'},
                 "canary": {"deployment": f"{service(i)}-canary", "selector": f'job="{service(i)}-canary"'}}
                for i in range(n)]
    return {
        "server": {"listen": f"127.0.0.1:{port}", "webhook_token_file": str(tokens / "webhook"),
                   "api_token_file": str(tokens / "api")},
        "prometheus": {"url": prometheus_url, "timeout": "5s", "retries": 1},
        "kubernetes": {"enabled": False},
        "defaults": {"traffic_steps": [5, 25, 50, 100], "step_duration": "6h", "max_step_duration": "12h",
                     "interval": "5s", "min_requests": 100000},
        "canaries": canaries,
    }


# --- the daemon process -------------------------------------------------------------------


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def error_lines(self) -> list[str]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                level = json.loads(line).get("level")
            except ValueError:
                level = "error"  # not a JSON line: a traceback or a logging error
            if level in ("error", "critical"):
                out.append(line)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_daemon(workdir: Path, prometheus_url: str, n: int) -> Daemon:
    tokens = workdir / "tokens"
    tokens.mkdir()
    (tokens / "webhook").write_text(WEBHOOK_TOKEN)
    (tokens / "api").write_text(API_TOKEN)
    port = free_port()
    config_path = workdir / "canaryd.yaml"
    config_path.write_text(yaml.safe_dump(daemon_config(port, prometheus_url, n, tokens), sort_keys=False))
    log_path = workdir / "canaryd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "canaryd.cli", "run", "--config", str(config_path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT / "daemon")})
    return Daemon(proc, f"http://127.0.0.1:{port}", log_path)


# --- the requests -------------------------------------------------------------------------


def _alert(alertname: str, canary: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "startsAt": "2024-05-01T12:00:00Z",
            "labels": {"alertname": alertname, "canary": canary, "namespace": NAMESPACE, **labels},
            "annotations": {"summary": "soak"}, "fingerprint": f"{random.getrandbits(64):016x}"}


def _message(*alerts: dict[str, Any]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "receiver": "canaryd", "alerts": list(alerts)}).encode()


@dataclass(frozen=True)
class Call:
    kind: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _webhook(kind: str, body: bytes, token: str | None = WEBHOOK_TOKEN) -> Call:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return Call(kind, "POST", "/webhooks/alertmanager", body, headers)


def _api(kind: str, method: str, path: str, token: str | None = API_TOKEN) -> Call:
    return Call(kind, method, "/api/v1/canaries" + path, b"", {"Authorization": f"Bearer {token}"} if token else {})


def next_call(rng: random.Random, n: int, seq: int) -> Call:
    """One request of the mix; roughly half valid, half not."""
    svc = service(rng.randrange(n))
    choice = rng.randrange(20)
    calls = {
        0: lambda: _webhook("webhook resolved", _message(_alert("CanaryHighErrorRate", svc, "resolved"))),
        1: lambda: _webhook("webhook unknown canary", _message(_alert("CanaryHighErrorRate", "no-such-svc"))),
        2: lambda: _webhook("webhook unknown alertname", _message(_alert(f"Noise{seq}", svc))),
        3: lambda: _webhook("webhook lone surrogate", _message(_alert("\ud800", svc))),  # sent as \ud800
        4: lambda: _webhook("webhook not JSON", rng.randbytes(rng.randrange(1, 200))),
        5: lambda: _webhook("webhook wrong token", _message(_alert("CanaryHighErrorRate", svc)), "wrong"),
        6: lambda: _webhook("webhook no token", _message(), None),
        7: lambda: _webhook("webhook bad shape", json.dumps({"version": "4", "alerts": [{"status": 1}]}).encode()),
        8: lambda: _api("api get", "GET", f"/{NAMESPACE}/{svc}"),
        9: lambda: _api("api get", "GET", f"/{NAMESPACE}/{svc}"),
        10: lambda: _api("api pause+resume", "POST", f"/{NAMESPACE}/{svc}/pause"),
        11: lambda: _api("api unknown canary", "GET", f"/{NAMESPACE}/nope-{seq}"),
        12: lambda: _api("api unknown verb", "POST", f"/{NAMESPACE}/{svc}/explode"),
        13: lambda: _api("api wrong method", "DELETE", f"/{NAMESPACE}/{svc}"),
        14: lambda: _api("api no token", "POST", f"/{NAMESPACE}/{svc}/pause", None),
        15: lambda: _api("api resume while progressing", "POST", f"/{NAMESPACE}/{svc}/resume"),
        # /metrics is ~1.2 MB with 200 canaries: twice a second, busier than any Prometheus would scrape
        16: lambda: Call("metrics", "GET", "/metrics") if seq % 5 == 0 else _api("api get", "GET", f"/{NAMESPACE}/{svc}"),
        17: lambda: Call("raw", "RAW", "", rng.choice(RAW_REQUESTS)),
        18: lambda: _webhook("webhook too large", b"x" * (1024 * 1024 + 1)) if seq % 50 == 0 else
        _webhook("webhook wrong version", json.dumps({"version": "3", "alerts": []}).encode()),
        19: lambda: _api("api list", "GET", "") if seq % 10 == 0 else _api("api get", "GET", f"/{NAMESPACE}/{svc}"),
    }
    return calls[choice]()


RAW_REQUESTS = (
    b"POST /webhooks/alertmanager HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
    b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    b"GARBAGE\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\r\nConnection: close\r\n\r\n",
    b"POST /api/v1/canaries/soak/svc-0/pause HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xc3(\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n",
)


@dataclass
class Stats:
    answers: Counter[int] = field(default_factory=Counter)
    by_kind: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # connection errors, timeouts
    sent: int = 0
    skipped: int = 0  # the mix fell behind: more than MAX_IN_FLIGHT requests were open


async def raw(url: str, data: bytes) -> int:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1])


async def perform(session: aiohttp.ClientSession, url: str, call: Call, stats: Stats) -> None:
    try:
        if call.method == "RAW":
            status = await raw(url, call.body)
            ok = status == 400 or status in DOCUMENTED
        else:
            async with session.request(call.method, url + call.path, data=call.body or None,
                                       headers=call.headers) as resp:
                body = await resp.read()
                status = resp.status
                ok = status in DOCUMENTED and (status == 200 or b'"error"' in body)
            if call.kind == "api pause+resume" and status == 200:
                async with session.post(url + call.path.replace("/pause", "/resume"), headers=call.headers) as r:
                    await r.read()
                    stats.by_kind[("api resume", r.status)] += 1
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        stats.failures[type(e).__name__] += 1
        return
    stats.answers[status] += 1
    stats.by_kind[(call.kind, status)] += 1
    if not ok:
        stats.unexpected.append(f"{call.kind} {call.method} {call.path}: {status}")


# --- the run ------------------------------------------------------------------------------


async def start_all(session: aiohttp.ClientSession, url: str, n: int) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    for i in range(n):
        async with session.post(f"{url}/api/v1/canaries/{NAMESPACE}/{service(i)}/start", headers=headers) as r:
            if r.status != 200:
                raise RuntimeError(f"start {service(i)}: {r.status} {await r.text()}")


async def phases(session: aiohttp.ClientSession, url: str) -> Counter[str]:
    async with session.get(f"{url}/api/v1/canaries") as r:
        return Counter(c["phase"] for c in (await r.json())["canaries"])


async def drive(daemon: Daemon, args: argparse.Namespace) -> int:
    rng = random.Random(1)
    stats = Stats()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)) as s:
        await start_all(s, daemon.url, args.canaries)
        print(f"{args.canaries} canaries started; {args.rate}/s for {args.minutes} min", flush=True)
        in_flight: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        baseline: float | None = None
        rss_start = daemon.rss_mb()
        next_report = 60.0
        period = 1.0 / args.rate
        while (elapsed := time.monotonic() - start) < args.minutes * 60:
            target = int(elapsed / period)
            while stats.sent + stats.skipped < target:
                if len(in_flight) >= MAX_IN_FLIGHT:
                    stats.skipped += 1
                    continue
                task = asyncio.create_task(perform(s, daemon.url, next_call(rng, args.canaries, stats.sent), stats))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                stats.sent += 1
            if elapsed >= next_report:
                minute = round(next_report / 60)
                await report(s, daemon, stats, minute)
                if minute == args.warmup:
                    baseline = daemon.rss_mb()
                next_report += 60.0
            if daemon.proc.poll() is not None:
                print(f"canaryd exited with {daemon.proc.returncode}", flush=True)
                return 1
            await asyncio.sleep(period / 2)
        await asyncio.gather(*in_flight)
        return await summary(s, daemon, stats, args, rss_start, baseline)


async def report(s: aiohttp.ClientSession, daemon: Daemon, stats: Stats, minute: int) -> None:
    answers = " ".join(f"{k}:{v}" for k, v in sorted(stats.answers.items()))
    counts = dict(await phases(s, daemon.url))
    print(f"minute {minute:>3}: RSS {daemon.rss_mb():6.1f} MB, open fds {daemon.open_fds():3d}, "
          f"sent {stats.sent} (skipped {stats.skipped}), answers {answers}, failures {dict(stats.failures)}, "
          f"unexpected {len(stats.unexpected)}, phases {counts}, ERROR log lines {len(daemon.error_lines())}",
          flush=True)


async def summary(s: aiohttp.ClientSession, daemon: Daemon, stats: Stats, args: argparse.Namespace,
                  rss_start: float, baseline: float | None) -> int:
    end = daemon.rss_mb()
    base = baseline if baseline is not None else rss_start
    growth = 100.0 * (end - base) / base
    counts = await phases(s, daemon.url)
    errors = daemon.error_lines()
    async with s.get(daemon.url + "/metrics") as r:
        metrics_ok, metrics_text = r.status == 200, await r.text()
    alertnames = {line.split('alertname="', 1)[1].split('"', 1)[0] for line in metrics_text.splitlines()
                  if line.startswith("canaryd_alerts_received_total{")}
    print("\nanswers by kind and status:")
    for (kind, status), n in sorted(stats.by_kind.items()):
        print(f"  {kind:<32} {status}  {n}")
    print(f"sent {stats.sent} in {args.minutes} min ({stats.sent / (args.minutes * 60):.0f}/s), skipped {stats.skipped}")
    print(f"unexpected answers: {len(stats.unexpected)} {stats.unexpected[:5]}")
    print(f"client failures: {dict(stats.failures)}")
    print(f"daemon ERROR log lines: {len(errors)} {errors[:3]}")
    print(f"/metrics: {'200' if metrics_ok else 'FAILED'}, {len(metrics_text)} bytes, alertname values {sorted(alertnames)}")
    print(f"phases at the end: {dict(counts)}")
    print(f"RSS: {rss_start:.1f} MB after start, {base:.1f} MB after {args.warmup} min, {end:.1f} MB at the end; "
          f"open fds {daemon.open_fds()}")
    print(f"RSS growth after the first {args.warmup} minutes: {growth:.1f} % (target <= {RSS_TARGET_PERCENT:g} %)")
    ok = (growth <= RSS_TARGET_PERCENT and not stats.unexpected and not errors and metrics_ok
          and counts.get("progressing", 0) + counts.get("paused", 0) == args.canaries)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    p.add_argument("--warmup", type=int, default=5, help="minutes before the RSS baseline (default 5)")
    p.add_argument("--rate", type=float, default=200.0, help="requests a second (default 200)")
    p.add_argument("--canaries", type=int, default=200, help="canaries progressing (default 200)")
    args = p.parse_args(argv)
    if missing := missing_binaries():
        print(f"soak: {', '.join(missing)} not installed", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="canaryd-soak-"))
    servers: list[Any] = []
    daemon: Daemon | None = None
    try:
        names = [service(i) for i in range(args.canaries)]
        labels = {"namespace": NAMESPACE}
        for arm, rps in (("stable", STABLE_RPS), ("canary", CANARY_RPS)):
            exporter = ExporterProcess([f"{n}-{arm}" for n in names], labels=labels, rps=rps, workdir=workdir / arm)
            servers.append(exporter)
            exporter.start()
        prometheus = PrometheusServer([e.address for e in servers], scrape_interval="5s",
                                      workdir=workdir / "prometheus")
        servers.append(prometheus)
        prometheus.start()
        prometheus.wait_for_targets_up()
        daemon = start_daemon(workdir, prometheus.url, args.canaries)
        wait_until(lambda: _healthy(daemon), timeout=60, what="canaryd /healthz")
        return asyncio.run(drive(daemon, args))
    finally:
        clean = True
        if daemon is not None:
            daemon.stop()
            clean = daemon.proc.returncode in (0, -15)  # exited on its own or on our SIGTERM
        for server in reversed(servers):
            server.stop()
        if clean:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"canaryd failed; its log is kept: {workdir / 'canaryd.log'}", file=sys.stderr)


def _healthy(daemon: Daemon) -> bool:
    if daemon.proc.poll() is not None:
        raise RuntimeError(f"canaryd exited with {daemon.proc.returncode}: {daemon.log_path.read_text()[-2000:]}")
    try:
        with urllib.request.urlopen(daemon.url + "/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
