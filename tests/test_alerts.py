"""alerts.py: Alertmanager v4 parsing, matching, de-duplication and planning.

The last test runs the real Alertmanager (Debian's prometheus-alertmanager) and parses what it
actually sends.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from canaryd.alerts import (
    OUTCOMES,
    Alert,
    AlertDeduper,
    CanaryIndex,
    PayloadError,
    WebhookMessage,
    compute_fingerprint,
    match_alert,
    parse_timestamp,
    parse_webhook,
    plan_alerts,
)

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


def alert_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "status": "firing",
        "labels": {"alertname": "CanaryHighErrorRate", "namespace": "orion", "canary": "auth-service"},
        "annotations": {"summary": "canary 5xx above 5%"},
        "startsAt": "2024-05-01T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
        "fingerprint": "0123456789abcdef",
    }
    doc.update(over)
    return doc


def payload(*alerts: dict[str, Any], **over: Any) -> bytes:
    doc: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{alertname="CanaryHighErrorRate"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "canaryd",
        "groupLabels": {"alertname": "CanaryHighErrorRate"},
        "commonLabels": {"alertname": "CanaryHighErrorRate"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts) if alerts else [alert_doc()],
    }
    doc.update(over)
    return json.dumps(doc).encode()


def make_alert(labels: dict[str, str], status: str = "firing", fingerprint: str | None = None,
               starts_at: datetime | None = None) -> Alert:
    return Alert(
        status=status,  # type: ignore[arg-type]
        labels=labels,
        annotations={},
        starts_at=starts_at or datetime(2024, 5, 1, tzinfo=UTC),
        ends_at=None,
        generator_url="",
        fingerprint=fingerprint or compute_fingerprint(labels),
    )


# --- parsing ------------------------------------------------------------------------------


def test_parse_full_message() -> None:
    msg = parse_webhook(payload())
    assert isinstance(msg, WebhookMessage)
    assert msg.version == "4" and msg.status == "firing" and msg.receiver == "canaryd"
    assert msg.group_key == '{}:{alertname="CanaryHighErrorRate"}'
    assert msg.group_labels == {"alertname": "CanaryHighErrorRate"}
    assert msg.external_url == "http://alertmanager:9093" and msg.truncated_alerts == 0
    (a,) = msg.alerts
    assert a.status == "firing" and a.alertname == "CanaryHighErrorRate"
    assert a.labels["canary"] == "auth-service" and a.annotations == {"summary": "canary 5xx above 5%"}
    assert a.starts_at == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert a.ends_at is None  # Go's zero time
    assert a.generator_url.startswith("http://prometheus") and a.fingerprint == "0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
        ("2024-05-01T10:00:00.1Z", datetime(2024, 5, 1, 10, 0, 0, 100000, tzinfo=UTC)),
        ("2024-05-01T10:00:00.12Z", datetime(2024, 5, 1, 10, 0, 0, 120000, tzinfo=UTC)),
        ("2024-05-01T10:00:00.123Z", datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2024-05-01T10:00:00.1234Z", datetime(2024, 5, 1, 10, 0, 0, 123400, tzinfo=UTC)),
        ("2024-05-01T10:00:00.12345Z", datetime(2024, 5, 1, 10, 0, 0, 123450, tzinfo=UTC)),
        ("2024-05-01T10:00:00.123456Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00.1234567Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00.12345678Z", datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-01T10:00:00.999999999Z", datetime(2024, 5, 1, 10, 0, 0, 999999, tzinfo=UTC)),
        ("2018-08-03T09:52:26.739266876+02:00",
         datetime(2018, 8, 3, 9, 52, 26, 739266, tzinfo=timezone(timedelta(hours=2)))),
        ("2024-05-01T10:00:00-05:30", datetime(2024, 5, 1, 10, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
        ("2024-05-01t10:00:00z", datetime(2024, 5, 1, 10, tzinfo=UTC)),
    ],
)
def test_timestamps_0_to_9_fraction_digits_and_offsets(text: str, expected: datetime) -> None:
    assert parse_timestamp(text) == expected
    msg = parse_webhook(payload(alert_doc(startsAt=text)))
    assert msg.alerts[0].starts_at == expected
    assert msg.alerts[0].starts_at.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "bad", ["2024-05-01", "2024-05-01T10:00:00", "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00.1234567890Z",
            "2024-13-01T10:00:00Z", "2024-05-01T10:00:00+2:00", "yesterday", ""],
)
def test_bad_timestamps_are_named_with_their_path(bad: str) -> None:
    alerts = [alert_doc(), alert_doc(), alert_doc(startsAt=bad)]
    with pytest.raises(PayloadError) as e:
        parse_webhook(payload(*alerts))
    assert str(e.value) == f"alerts[2].startsAt: not an RFC 3339 timestamp: {bad!r}"


def test_ends_at_real_value_and_missing() -> None:
    msg = parse_webhook(payload(alert_doc(status="resolved", endsAt="2024-05-01T10:05:00.5Z"),
                                {k: v for k, v in alert_doc().items() if k != "endsAt"}))
    assert msg.alerts[0].ends_at == datetime(2024, 5, 1, 10, 5, 0, 500000, tzinfo=UTC)
    assert msg.alerts[0].status == "resolved"
    assert msg.alerts[1].ends_at is None


def test_missing_fingerprint_is_computed_like_alertmanager() -> None:
    labels = {"alertname": "CanaryHighErrorRate", "namespace": "orion", "canary": "auth-service", "x": "ü€"}
    # Value taken from a real Alertmanager 0.25 (GET /api/v2/alerts) for this label set.
    assert compute_fingerprint(labels) == "40f146fe0bd5f6c1"
    doc = alert_doc(labels=labels)
    del doc["fingerprint"]
    msg = parse_webhook(payload(doc))
    assert msg.alerts[0].fingerprint == "40f146fe0bd5f6c1"
    # Stable: independent of label order.
    assert compute_fingerprint(dict(reversed(list(labels.items())))) == "40f146fe0bd5f6c1"


def test_optional_fields_default() -> None:
    minimal = {"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "A"},
                                            "startsAt": "2024-05-01T10:00:00Z"}]}
    msg = parse_webhook(json.dumps(minimal).encode())
    assert msg.group_key == "" and msg.receiver == "" and msg.common_labels == {} and msg.truncated_alerts == 0
    assert msg.alerts[0].annotations == {} and msg.alerts[0].generator_url == ""
    assert msg.alerts[0].fingerprint == compute_fingerprint({"alertname": "A"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"\xff\xfe", "body: not "),
        (b"[" * 100_000 + b"]" * 100_000, "body: JSON nested too deeply"),
        (b"[]", "body: expected a JSON object (Alertmanager webhook v4), got a list"),
        (payload(version="3"), "version: unsupported '3'; allowed: \"4\" (Alertmanager webhook v4)"),
        (payload(version=4), "version: unsupported 4; allowed: \"4\""),
        (json.dumps({"alerts": []}).encode(), "version: missing; allowed: \"4\""),
        (json.dumps({"version": "4"}).encode(), "alerts: missing"),
        (payload(alerts={}), "alerts: expected a list, got an object"),
        (payload(alerts=[1]), "alerts[0]: expected an object, got a number"),
        (payload(alert_doc(status="pending")), "alerts[0].status: expected \"firing\" or \"resolved\", got 'pending'"),
        (payload(alert_doc(), alert_doc(labels={"a": 1})), "alerts[1].labels.a: expected a string, got a number"),
        (payload(alert_doc(labels=None)), "alerts[0].labels: missing"),
        (payload(alert_doc(startsAt=5)), "alerts[0].startsAt: expected an RFC 3339 timestamp string, got a number"),
        (payload(alert_doc(endsAt="soon")), "alerts[0].endsAt: not an RFC 3339 timestamp: 'soon'"),
        (payload(alert_doc(fingerprint=12)), "alerts[0].fingerprint: expected a string, got a number"),
        (payload(truncatedAlerts=-1), "truncatedAlerts: expected a non-negative integer"),
        (payload(status="ok"), "status: expected \"firing\" or \"resolved\""),
        (payload(commonLabels=[]), "commonLabels: expected an object of string values, got a list"),
    ],
)
def test_payload_errors_name_the_path(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as e:
        parse_webhook(body)
    assert str(e.value).startswith(message)


def test_labels_null_is_an_error_not_empty() -> None:
    doc = alert_doc()
    del doc["labels"]
    with pytest.raises(PayloadError, match=r"^alerts\[0\]\.labels: missing"):
        parse_webhook(payload(doc))


# --- matching -----------------------------------------------------------------------------

CANARIES = [("orion", "auth-service"), ("orion", "api"), ("billing", "api"), ("shop", "cart")]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"canary": "auth-service", "namespace": "orion"}, "orion/auth-service"),
        ({"service": "auth-service", "namespace": "orion"}, "orion/auth-service"),
        ({"canary": "api", "namespace": "billing"}, "billing/api"),
        ({"canary": "auth-service"}, "orion/auth-service"),  # no namespace, unique name
        ({"service": "cart"}, "shop/cart"),
        ({"canary": "api"}, None),  # no namespace, ambiguous: never guess
        ({"canary": "auth-service", "namespace": "billing"}, None),  # wrong namespace
        ({"canary": "auth-service-canary", "namespace": "orion"}, None),  # exact names only
        ({"canary": "Auth-Service", "namespace": "orion"}, None),
        ({"canary": "nope", "service": "auth-service", "namespace": "orion"}, None),  # canary label wins
        ({"canary": "", "service": "auth-service", "namespace": "orion"}, "orion/auth-service"),  # empty = absent
        ({"namespace": "orion"}, None),
    ],
)
def test_match_alert(labels: dict[str, str], expected: str | None) -> None:
    alert = make_alert({"alertname": "X", **labels})
    assert match_alert(alert, CANARIES) == expected
    assert match_alert(alert, CanaryIndex(CANARIES)) == expected


# --- de-duplication -----------------------------------------------------------------------


def test_deduper_key_is_fingerprint_status_starts_at() -> None:
    d = AlertDeduper()
    a = make_alert({"alertname": "A"})
    assert d.seen(a) is False
    assert d.seen(a) is True
    assert d.seen(make_alert({"alertname": "A"}, status="resolved")) is False
    later = make_alert({"alertname": "A"}, starts_at=datetime(2024, 5, 2, tzinfo=UTC))
    assert d.seen(later) is False  # the same alert firing again later is new
    assert d.seen(make_alert({"alertname": "A"}, fingerprint="other")) is False
    d.forget(a)
    assert d.seen(a) is False


def test_deduper_is_bounded_lru() -> None:
    d = AlertDeduper(max_entries=3)
    alerts = [make_alert({"alertname": "A", "i": str(i)}) for i in range(4)]
    for a in alerts[:3]:
        assert not d.seen(a)
    assert d.seen(alerts[0])  # touch 0: now 1 is the least recently used
    assert not d.seen(alerts[3])  # evicts 1
    assert len(d) == 3
    assert d.seen(alerts[0]) and d.seen(alerts[2]) and d.seen(alerts[3])
    assert not d.seen(alerts[1])
    with pytest.raises(ValueError, match="max_entries"):
        AlertDeduper(0)


def test_dedupers_are_independent() -> None:
    a = make_alert({"alertname": "A"})
    assert not AlertDeduper().seen(a)
    assert not AlertDeduper().seen(a)


# --- planning -----------------------------------------------------------------------------

RULES = {"CanaryHighErrorRate": "rollback", "CanaryLatencyHigherThanStable": "hold"}


def test_plan_alerts_every_outcome() -> None:
    base = {"alertname": "CanaryHighErrorRate", "namespace": "orion", "canary": "auth-service"}
    docs = [
        alert_doc(labels=base, fingerprint="f1"),  # accepted
        alert_doc(labels=base, fingerprint="f1"),  # duplicate (same message)
        alert_doc(labels={**base, "alertname": "CanaryLatencyHigherThanStable"}, fingerprint="f2"),  # accepted, hold
        alert_doc(labels=base, fingerprint="f3", status="resolved", endsAt="2024-05-01T11:00:00Z"),
        alert_doc(labels={**base, "alertname": "DiskFull"}, fingerprint="f4"),
        alert_doc(labels={"alertname": "CanaryHighErrorRate", "namespace": "orion"}, fingerprint="f5"),
        alert_doc(labels={**base, "canary": "ghost"}, fingerprint="f6"),
    ]
    deduper = AlertDeduper()
    plan = plan_alerts(parse_webhook(payload(*docs)), CANARIES, RULES, deduper)
    assert [(p.outcome, p.canary_key, p.action) for p in plan] == [
        ("accepted", "orion/auth-service", "rollback"),
        ("duplicate", "orion/auth-service", None),
        ("accepted", "orion/auth-service", "hold"),
        ("ignored_resolved", "orion/auth-service", None),
        ("unknown_alertname", None, None),
        ("no_canary_label", None, None),
        ("unknown_canary", None, None),
    ]
    assert {p.outcome for p in plan} == set(OUTCOMES)
    assert [p.alertname for p in plan][:5] == ["CanaryHighErrorRate"] * 2 + ["CanaryLatencyHigherThanStable",
                                                                            "CanaryHighErrorRate", "DiskFull"]
    assert plan[3].status == "resolved"
    # Only alerts about a configured canary are remembered.
    assert len(deduper) == 3


def test_redelivery_changes_nothing() -> None:
    deduper = AlertDeduper()
    body = payload(alert_doc(), alert_doc(status="resolved", fingerprint="r", endsAt="2024-05-01T11:00:00Z"))
    first = plan_alerts(parse_webhook(body), CANARIES, RULES, deduper)
    again = plan_alerts(parse_webhook(body), CANARIES, RULES, deduper)
    assert [p.outcome for p in first] == ["accepted", "ignored_resolved"]
    assert [p.outcome for p in again] == ["duplicate", "duplicate"]


# --- the real Alertmanager ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not os.access(ALERTMANAGER, os.X_OK), reason="prometheus-alertmanager not installed")
async def test_parses_what_real_alertmanager_sends(aiohttp_server: Any, tmp_path: Path) -> None:
    bodies: asyncio.Queue[bytes] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await bodies.put(await request.read())
        return web.Response()

    app = web.Application()
    app.router.add_post("/webhooks/alertmanager", receive)
    server = await aiohttp_server(app, host="127.0.0.1")

    port = _free_port()
    (tmp_path / "am.yml").write_text(
        "route: {receiver: canaryd, group_by: [alertname], group_wait: 0s, group_interval: 1s}\n"
        "receivers:\n"
        f"  - name: canaryd\n    webhook_configs: [{{url: 'http://127.0.0.1:{server.port}/webhooks/alertmanager'}}]\n"
    )
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={tmp_path / 'am.yml'}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 15
            while True:
                try:
                    async with http.get(f"{base}/-/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "am.log").read_text()
                await asyncio.sleep(0.05)

            labels = {"alertname": "CanaryHighErrorRate", "namespace": "orion", "canary": "auth-service"}
            starts = "2024-05-01T10:00:00.123456789Z"
            async with http.post(f"{base}/api/v2/alerts", json=[{"labels": labels, "startsAt": starts}]) as r:
                assert r.status == 200, await r.text()
            body = await asyncio.wait_for(bodies.get(), 10)

            msg = parse_webhook(body)
            assert msg.version == "4" and msg.status == "firing" and msg.receiver == "canaryd"
            assert msg.group_labels == {"alertname": "CanaryHighErrorRate"}
            (a,) = msg.alerts
            assert a.labels == labels and a.status == "firing"
            assert a.starts_at == datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
            assert a.fingerprint == compute_fingerprint(labels)
            plan = plan_alerts(msg, CANARIES, RULES, AlertDeduper())
            assert [(p.outcome, p.canary_key, p.action) for p in plan] == [
                ("accepted", "orion/auth-service", "rollback")
            ]

            # Resolve it: Alertmanager sends a resolved message with a real endsAt.
            ends = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            async with http.post(f"{base}/api/v2/alerts",
                                 json=[{"labels": labels, "startsAt": starts, "endsAt": ends}]) as r:
                assert r.status == 200
            while True:
                resolved = parse_webhook(await asyncio.wait_for(bodies.get(), 10))
                if resolved.status == "resolved":
                    break
            assert resolved.alerts[0].ends_at is not None
            assert resolved.alerts[0].fingerprint == a.fingerprint
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(tmp_path / "data", ignore_errors=True)


# --- input no sender should be able to break us -------------------------------------------


@pytest.mark.parametrize("labels", [{"alertname": "\ud800"}, {"canary": "\udfff"}, {"\udc00": "x"}])
def test_a_lone_surrogate_anywhere_is_a_payload_error_naming_where(labels: dict[str, str]) -> None:
    doc = alert_doc(labels=labels)
    del doc["fingerprint"]  # the fingerprint is then computed from the labels
    with pytest.raises(PayloadError, match=r"^alerts\[0\]\.labels.*lone UTF-16 surrogate"):
        parse_webhook(payload(doc))


def test_a_surrogate_pair_is_ordinary_text() -> None:
    msg = parse_webhook(payload(alert_doc(annotations={"summary": "\ud83d\ude00"})))
    assert msg.alerts[0].annotations["summary"] == "\N{GRINNING FACE}"


def test_a_number_with_too_many_digits_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="too many digits"):
        parse_webhook(b'{"version": "4", "alerts": [], "truncatedAlerts": ' + b"9" * 5000 + b"}")


def test_fingerprint_of_a_lone_surrogate_does_not_raise() -> None:
    assert len(compute_fingerprint({"canary": "\ud800"})) == 16
