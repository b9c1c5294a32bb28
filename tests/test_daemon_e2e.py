"""End to end: `canaryd run` as a subprocess against real Prometheus, Alertmanager and exporters.

One Prometheus, one Alertmanager, two exporter processes (every canary's stable arm in one, every
canary arm in the other) and one daemon are shared by the module; each scenario has a canary of its
own. The daemon runs in dry-run mode (`kubernetes.enabled: false`) with 2-second steps and 1-second
ticks. Everything is observed the way an operator would: the HTTP API, /metrics and /readyz.
The signal tests run a second daemon of their own, since they change its config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon_process import DaemonProcess
from http_helpers import request, wait_for
from servers import (
    AlertmanagerServer,
    ExporterProcess,
    PrometheusServer,
    ServerProcess,
    free_port,
    missing_binaries,
)

NS = "orion"
TOKEN = "e2e-webhook-token"
RPS = 150.0  # per arm: a 2 s step sees ~300 canary requests, enough for the pass bound at 0 errors


def canary(name: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "route": name,
            "stable": {"deployment": f"{name}-stable", "selector": f'job="{name}-stable"'},
            "canary": {"deployment": f"{name}-canary", "selector": f'job="{name}-canary"'}, **settings}


SLOW = {"step_duration": "60s", "max_step_duration": "120s"}  # stays at its first step while a test acts on it
CANARIES = [
    canary("good"),
    canary("bad"),
    canary("alerted", **SLOW),
    canary("outage", auto_promote=False),
    canary("steady", **SLOW),
    # A 4 s step that may be held 10 s at most, then rolled back: an outage longer than both must not count.
    # (10 s, not less: after the outage Prometheus needs a few scrapes before the step sees its requests.)
    canary("outage-timer", step_duration="4s", max_step_duration="10s", on_max_step_duration="rollback",
           auto_promote=False),
]


def daemon_config(port: int, prometheus_url: str, canaries: list[dict[str, Any]], token_file: Path | None
                  ) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{port}", "webhook_token_file": None if token_file is None else str(token_file)},
        "prometheus": {"url": prometheus_url, "timeout": "2s", "retries": 1},
        "kubernetes": {"enabled": False},
        "defaults": {"traffic_steps": [5, 25, 50, 100], "step_duration": "2s", "interval": "1s",
                     "min_requests": 50, "auto_promote": True, "max_step_duration": "60s"},
        "canaries": canaries,
    }


# ---------------------------------------------------------------------------------------------- helpers


class Daemon(DaemonProcess):
    """A `canaryd run` subprocess; its stderr (the logs) goes to a file."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, log_format: str = "json") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir / "canaryd.yaml", workdir / "canaryd.log", config,
                         args=("--log-format", log_format), namespace=NS)

    def webhook(self, body: bytes, token: str | None = TOKEN) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return request("POST", self.url + "/webhooks/alertmanager", body, headers)


@dataclass
class Env:
    daemon: Daemon
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    stable: ExporterProcess
    canaries: ExporterProcess


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; run: apt-get install -y prometheus prometheus-alertmanager")
    wd = tmp_path_factory.mktemp("e2e")
    names = [c["name"] for c in CANARIES]
    stable = ExporterProcess([f"{n}-stable" for n in names], labels={"namespace": NS}, rps=RPS, workdir=wd / "stable")
    canaries = ExporterProcess([f"{n}-canary" for n in names], labels={"namespace": NS}, rps=RPS,
                               workdir=wd / "canaries")
    prometheus = PrometheusServer([stable.address, canaries.address], workdir=wd / "prometheus")
    port = free_port()
    alertmanager = AlertmanagerServer(f"http://127.0.0.1:{port}/webhooks/alertmanager", bearer_token=TOKEN,
                                      group_interval="1s", repeat_interval="2s", workdir=wd / "alertmanager")
    token_file = wd / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    started: list[ServerProcess] = []
    daemon: Daemon | None = None
    try:
        for server in (stable, canaries, prometheus, alertmanager):
            started.append(server)
            server.start()
        canaries.control(job="bad-canary", error_rate=0.10)
        daemon = Daemon(wd / "daemon", daemon_config(port, prometheus.url, CANARIES, token_file))
        prometheus.wait_for_targets_up()  # meanwhile the daemon starts
        daemon.wait_ready()
        yield Env(daemon, prometheus, alertmanager, stable, canaries)
    finally:
        if daemon is not None:
            daemon.stop()
        for server in reversed(started):
            server.stop()


def phase_is(d: Daemon, name: str, *phases: str) -> dict[str, Any] | None:
    status = d.canary(name)
    return status if status["phase"] in phases else None


# ---------------------------------------------------------------------------------------------- scenarios


def test_good_canary_walks_every_step_and_is_promoted(env: Env) -> None:
    d = env.daemon
    status, body = d.command("good", "start")
    assert status == 200 and body["phase"] == "progressing" and body["weight"] == 5
    seen_weights: list[int] = []

    def done() -> dict[str, Any] | None:
        s = d.canary("good")
        if not seen_weights or seen_weights[-1] != s["weight"]:
            seen_weights.append(s["weight"])
        return s if s["phase"] not in ("progressing", "promoting") else None

    final = wait_for(done, timeout=45, interval=0.1, what="the good canary to finish")
    assert final["phase"] == "succeeded", final["last_decision"]
    advances = [h for h in final["history"] if h["decision"] == "advance"]
    assert [h["weight"] for h in advances] == [5, 25, 50, 100]
    assert all(h["trigger"] == "analysis" for h in advances)
    assert [h["decision"] for h in final["history"]][-2:] == ["promote", "promoted"]
    assert [h["decision"] for h in final["history"]][0] == "start"
    assert [w for w in seen_weights if w] == sorted(w for w in seen_weights if w)  # only ever up
    # Each step lasted at least its 2 s.
    starts = [final["history"][0]["at"], *(h["at"] for h in advances)]
    assert all(b - a >= 2.0 for a, b in zip(starts, starts[1:], strict=False))
    assert d.metric("canaryd_promotions_total", namespace=NS, canary="good") == 1
    assert d.metric("canaryd_rollbacks_total", namespace=NS, canary="good") == 0
    assert d.metric("canaryd_decisions_total", namespace=NS, canary="good", decision="advance") == 4
    assert d.metric("canaryd_canary_phase", namespace=NS, canary="good", phase="succeeded") == 1


def test_bad_canary_is_rolled_back_by_analysis(env: Env) -> None:
    d = env.daemon
    assert d.command("bad", "start")[0] == 200
    final = wait_for(lambda: phase_is(d, "bad", "rolled_back", "succeeded", "paused"), timeout=20,
                     what="the bad canary to be judged")
    assert final["phase"] == "rolled_back" and final["weight"] == 0
    last = final["last_decision"]
    assert last["decision"] == "rollback" and last["trigger"] == "analysis"
    failed = {m["name"] for m in last["metrics"] if m["verdict"] == "fail"}
    assert "error_rate" in failed or "error_ratio" in failed, last["reasons"]
    assert not [h for h in final["history"] if h["decision"] == "advance"]  # never went past 5 %
    assert d.metric("canaryd_rollbacks_total", namespace=NS, canary="bad", trigger="analysis") == 1
    assert d.metric("canaryd_rollbacks_total", namespace=NS, canary="bad") == 1
    assert d.metric("canaryd_canary_weight", namespace=NS, canary="bad") == 0


def test_alert_through_alertmanager_rolls_back_within_a_second(env: Env) -> None:
    d, am = env.daemon, env.alertmanager
    assert d.command("alerted", "start")[0] == 200
    accepted = {"alertname": "CanaryHighErrorRate", "status": "firing"}
    before_accepted = d.metric("canaryd_alerts_received_total", outcome="accepted", **accepted)
    before_duplicates = d.metric("canaryd_alerts_received_total", outcome="duplicate", **accepted)

    posted = time.monotonic()
    am.post_alerts([{"labels": {"alertname": "CanaryHighErrorRate", "canary": "alerted", "namespace": NS,
                                "severity": "critical"},
                     "annotations": {"summary": "canary 5xx above 5 %"}}])
    final = wait_for(lambda: phase_is(d, "alerted", "rolled_back"), timeout=5, interval=0.02,
                     what="the alert to roll the canary back")
    elapsed = time.monotonic() - posted
    print(f"\nalert POSTed to Alertmanager -> canary rolled back, seen through the API: {elapsed * 1000:.0f} ms")
    assert elapsed <= 1.0, f"rollback took {elapsed:.3f}s after the alert reached Alertmanager"
    assert final["last_decision"]["trigger"] == "alert"
    assert "CanaryHighErrorRate" in final["last_decision"]["reasons"][0]
    assert d.metric("canaryd_rollbacks_total", namespace=NS, canary="alerted", trigger="alert") == 1
    assert d.metric("canaryd_alerts_received_total", outcome="accepted", **accepted) == before_accepted + 1

    # Alertmanager redelivers the group (repeat_interval 2s): nothing changes, and it is counted.
    wait_for(lambda: d.metric("canaryd_alerts_received_total", outcome="duplicate", **accepted) > before_duplicates,
             timeout=10, interval=0.2, what="Alertmanager's redelivery")
    again = d.canary("alerted")
    assert (again["phase"], again["weight"], again["history"]) == (final["phase"], final["weight"], final["history"])
    assert d.metric("canaryd_rollbacks_total", namespace=NS, canary="alerted") == 1
    assert d.metric("canaryd_alerts_received_total", outcome="accepted", **accepted) == before_accepted + 1


def test_prometheus_stopped_mid_rollout_holds_then_continues(env: Env) -> None:
    d, prom = env.daemon, env.prometheus
    assert d.command("outage", "start")[0] == 200
    wait_for(lambda: d.canary("outage")["weight"] >= 25, timeout=20, what="the outage canary's first advance")
    errors_before = d.metric("canaryd_prometheus_errors_total")
    prom.stop()
    try:
        def degraded() -> Any:
            status, body = d.get("/readyz")
            assert status == 200, body  # still ready: the webhook and the API work without Prometheus
            return body if any("Prometheus unreachable" in p for p in body["problems"]) else None

        body = wait_for(degraded, timeout=10, what="/readyz to say Prometheus is unreachable")
        assert body["ready"] is True and body["healthy"] is False
        at_stop = d.canary("outage")
        assert at_stop["phase"] == "progressing", at_stop
        # Hold for a few ticks: no step, no promotion, no rollback; each tick says why.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            s = d.canary("outage")
            assert (s["phase"], s["step"], s["weight"]) == ("progressing", at_stop["step"], at_stop["weight"]), s
            time.sleep(0.2)
        s = d.canary("outage")
        assert s["history"][-1]["decision"] == "hold" and s["history"][-1]["trigger"] == "source"
        assert "Prometheus unreachable" in s["history"][-1]["reasons"][0]
        assert d.metric("canaryd_prometheus_errors_total") > errors_before
        assert d.metric("canaryd_promotions_total", namespace=NS, canary="outage") == 0
    finally:
        back = time.time()  # every advance after this was judged on data read after the restart
        prom.start()  # same port, same data directory
    wait_for(lambda: d.get("/readyz")[1]["healthy"], timeout=20, what="/readyz to say all is well again")

    def advanced() -> dict[str, Any] | None:
        s = d.canary("outage")
        return s if any(h["decision"] == "advance" and h["at"] > back for h in s["history"]) else None

    resumed = wait_for(advanced, timeout=20, what="the rollout to continue")
    assert resumed["weight"] > at_stop["weight"] or resumed["awaiting_promotion"], resumed


def test_an_outage_longer_than_the_step_is_neither_a_step_nor_a_rollback(env: Env) -> None:
    """Prometheus killed for longer than a whole step and its max_step_duration (rollback): the step's
    timer stops meanwhile, and the step completes once data returns."""
    d, prom = env.daemon, env.prometheus
    assert d.command("outage-timer", "start")[0] == 200
    prom.kill()
    try:
        at_stop = d.canary("outage-timer")
        deadline = time.monotonic() + 15.0  # > step_duration 4 s + max_step_duration 10 s after the start
        while time.monotonic() < deadline:
            s = d.canary("outage-timer")
            assert (s["phase"], s["step"], s["weight"]) == ("progressing", at_stop["step"], at_stop["weight"]), s
            time.sleep(0.2)
    finally:
        prom.start()

    def advanced() -> dict[str, Any] | None:
        s = d.canary("outage-timer")
        assert s["phase"] != "rolled_back", s["history"][-3:]
        return s if s["step"] > at_stop["step"] else None

    resumed = wait_for(advanced, timeout=30, interval=0.2, what="the step to complete after the outage")
    assert resumed["phase"] in ("progressing", "paused") and resumed["weight"] > at_stop["weight"], resumed
    assert d.metric("canaryd_rollbacks_total", namespace=NS, canary="outage-timer") == 0


def test_bad_webhook_input_gets_the_contract_status_and_changes_nothing(env: Env) -> None:
    d = env.daemon
    assert d.command("steady", "start")[0] == 200

    def positions() -> list[tuple[Any, ...]]:
        status, body = d.get("/api/v1/canaries")
        assert status == 200
        return [(c["name"], c["phase"], c["weight"], c["step"], c["step_started_at"]) for c in body["canaries"]
                if c["name"] in ("steady", "good", "bad", "alerted")]

    before = positions()

    def alert_message(alertname: str, canary_name: str) -> bytes:
        return json.dumps({"version": "4", "status": "firing", "receiver": "canaryd", "groupKey": "{}:{}",
                           "alerts": [{"status": "firing", "labels": {"alertname": alertname, "canary": canary_name,
                                                                      "namespace": NS},
                                       "annotations": {}, "startsAt": "2024-05-01T12:00:00.5Z",
                                       "endsAt": "0001-01-01T00:00:00Z"}]}).encode()

    status, body = d.webhook(b'{"version": "4", "alerts": [')
    assert status == 400 and body["error"].startswith("malformed Alertmanager payload")
    for token in (None, "not-the-token"):
        status, body = d.webhook(alert_message("CanaryHighErrorRate", "steady"), token=token)
        assert status == 401 and body == {"error": "missing or wrong bearer token"}
    huge = alert_message("CanaryHighErrorRate", "steady")[:-1] + b', "pad": "' + b"x" * (1024 * 1024) + b'"}'
    status, body = d.webhook(huge)
    assert status == 413 and "1 MiB" in body["error"]
    status, body = d.webhook(alert_message("CanaryHighErrorRate", "stedy"))
    assert status == 200 and body["alerts"][0]["outcome"] == "unknown_canary"
    status, body = d.webhook(alert_message("SomethingElseEntirely", "steady"))
    assert status == 200 and body["alerts"][0]["outcome"] == "unknown_alertname"

    assert positions() == before
    s = d.canary("steady")
    assert s["phase"] == "progressing" and not [h for h in s["history"] if h["trigger"] == "alert"]
    assert d.metric("canaryd_rollbacks_total", namespace=NS, canary="steady") == 0
    for outcome, labels in (("malformed", {}), ("unauthorized", {}), ("too_large", {}),
                            ("unknown_canary", {"alertname": "CanaryHighErrorRate"}),
                            ("unknown_alertname", {"alertname": "other"})):  # no rule: one shared series
        assert d.metric("canaryd_alerts_received_total", outcome=outcome, **labels) >= 1, outcome


def test_metrics_pass_promtool(env: Env) -> None:
    promtool = "/usr/bin/promtool"
    if not os.access(promtool, os.X_OK):
        pytest.skip("promtool not installed")
    status, text = env.daemon.get("/metrics")
    assert status == 200
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and check.stdout == "" and check.stderr == "", check.stdout + check.stderr


def test_sigint_stops_the_shared_daemon_cleanly(env: Env) -> None:
    """Last: stops the module's daemon."""
    d = env.daemon
    d.proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    code = d.proc.wait(timeout=10)
    assert time.monotonic() - sent <= 5.0 and code == 0, d.logs()[-2000:]
    lines = d.log_lines()  # every line is JSON
    assert any(line["msg"] == "shutting down" for line in lines)


# ---------------------------------------------------------------------------------------------- signals


@pytest.fixture
def lone_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon of its own (its config is rewritten), with an unreachable Prometheus: nothing progresses."""
    config = daemon_config(free_port(), f"http://127.0.0.1:{free_port()}", [canary("first")], None)
    d = Daemon(tmp_path, config)
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


def test_signals_reload_and_stop(lone_daemon: Daemon) -> None:
    d = lone_daemon
    config = yaml.safe_load(d.config_path.read_text())
    names = lambda: [c["name"] for c in d.get("/api/v1/canaries")[1]["canaries"]]  # noqa: E731
    assert names() == ["first"]
    assert d.command("first", "start")[0] == 200

    # A broken config is refused with a logged error; the old one keeps running.
    d.write_config("canaries:\n  - name: [unclosed\n")
    d.proc.send_signal(signal.SIGHUP)
    refused = wait_for(lambda: [x for x in d.log_lines() if x["msg"].startswith("config reload refused")],
                       timeout=10, what="the refused reload to be logged")
    assert refused[0]["level"] == "error" and "invalid YAML" in json.dumps(refused[0])
    d.write_config({**config, "canaries": [*config["canaries"], {"unknown_key": 1}]})
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len([x for x in d.log_lines() if x["msg"].startswith("config reload refused")]) == 2,
             timeout=10, what="the second refused reload")
    assert d.proc.poll() is None
    assert names() == ["first"] and d.canary("first")["phase"] == "progressing"

    # A valid changed config applies: a new canary appears, the running one keeps its place. A change
    # that needs a restart (the Prometheus timeout) is named in a warning.
    d.write_config({**config, "prometheus": {**config["prometheus"], "timeout": "3s"},
                    "canaries": [*config["canaries"], canary("second")]})
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: names() == ["first", "second"], timeout=10, what="the new canary after SIGHUP")
    assert d.canary("second")["phase"] == "idle"
    assert d.canary("first")["phase"] == "progressing" and d.canary("first")["weight"] == 5
    wait_for(lambda: any(x["msg"] == "config reloaded" for x in d.log_lines()), timeout=5, what="the reload log")
    restart = [x for x in d.log_lines() if x["msg"].startswith("changed config sections apply only after a restart")]
    assert restart and restart[0]["sections"] == ["prometheus"] and restart[0]["level"] == "warning"

    # SIGTERM: a clean exit, within 5 s.
    d.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = d.proc.wait(timeout=10)
    took = time.monotonic() - sent
    assert code == 0 and took <= 5.0, f"exit {code} after {took:.2f}s\n{d.logs()[-2000:]}"
    lines = d.log_lines()  # --log-format json: every line parses
    assert lines and all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    assert not [x for x in lines if x["level"] in ("error", "critical") and "reload" not in x["msg"]]


def test_a_bad_config_at_start_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults:\n  step_durration: 5m\n")
    run = subprocess.run([sys.executable, "-m", "canaryd.cli", "run", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "step_duration" in run.stderr and "Traceback" not in run.stderr


def test_a_taken_listen_address_exits_1_with_a_message(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "canaryd.yaml"
        config.write_text(yaml.safe_dump(daemon_config(port, f"http://127.0.0.1:{free_port()}", [], None)))
        run = subprocess.run([sys.executable, "-m", "canaryd.cli", "run", "--config", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert f"127.0.0.1:{port}" in run.stderr or "address already in use" in run.stderr.lower(), run.stderr
    assert "Traceback" not in run.stderr
