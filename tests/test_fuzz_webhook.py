"""Property tests of POST /webhooks/alertmanager against its contract (README "HTTP API").

Whatever the body and the Authorization header: a documented status (200, 400, 401, 413, 503), a JSON
error body naming the problem, no state change unless an alert was accepted, /metrics still 200,
nothing logged at ERROR, and canaryd_alerts_received_total's alertname only ever a configured name,
"other" or "unknown".
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fuzz_http import FUZZ, Answer, Harness, harness
from test_server import WEBHOOK, WEBHOOK_TOKEN

WEBHOOK_STATUSES = frozenset({200, 400, 401, 413, 503})
JSON_HEADER = (b"Content-Type", b"application/json")
LONE_SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")

# Any code point, lone surrogates included (the default alphabet leaves them out).
ANY_TEXT = st.text(st.one_of(st.characters(), st.sampled_from(LONE_SURROGATES)), max_size=12)
SAFE_TEXT = st.text(max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
GOOD_TIMESTAMPS = st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123456789+02:00",
                                   "0001-01-01T00:00:00Z"])


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`good` nine times in ten: most messages get past the first check and reach the controller."""
    return st.integers(0, 9).flatmap(lambda n: bad if n == 0 else good)


@st.composite
def alerts(draw: st.DrawFn, alertnames: list[str], text: st.SearchStrategy[str]) -> dict[str, Any]:
    labels = {"alertname": draw(st.sampled_from(alertnames) | text),
              "canary": draw(st.sampled_from(["auth-service", "cart", ""]) | text),
              **draw(st.dictionaries(text, text, max_size=3))}
    if draw(st.booleans()):
        labels["namespace"] = draw(st.sampled_from(["orion", "shop"]) | text)
    doc: dict[str, Any] = {
        "status": draw(_mostly(st.sampled_from(["firing", "resolved"]), ANY_TEXT)),
        "labels": labels,
        "annotations": draw(st.dictionaries(st.sampled_from(["summary", "description"]) | text, text, max_size=3)),
        "startsAt": draw(_mostly(GOOD_TIMESTAMPS, ANY_TEXT)),
    }
    if draw(st.booleans()):
        doc["fingerprint"] = draw(st.sampled_from(["", "a1b2c3d4e5f60718"]) | text)
    if draw(st.booleans()):
        doc["endsAt"] = draw(_mostly(GOOD_TIMESTAMPS, ANY_TEXT))
    return doc


@st.composite
def bodies(draw: st.DrawFn, alertnames: list[str]) -> bytes:
    """Arbitrary bytes, arbitrary JSON, or a message of the right shape with arbitrary text in it (lone
    surrogates in one message in four)."""
    kind = draw(st.sampled_from(["bytes", "json", "message", "message"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        doc = draw(JSON_VALUES)
    else:
        text = draw(_mostly(st.just(SAFE_TEXT), st.just(ANY_TEXT)) | st.just(ANY_TEXT))
        doc = {"version": draw(_mostly(st.just("4"), JSON_VALUES)), "status": "firing", "receiver": "canaryd",
               "groupLabels": {}, "commonLabels": draw(st.dictionaries(text, text, max_size=2)),
               "alerts": draw(st.lists(alerts(alertnames, text), max_size=3))}
    # ensure_ascii: a lone surrogate can only travel as a \uXXXX escape, as it would on the wire
    return json.dumps(doc, ensure_ascii=draw(st.booleans()) or _has_surrogate(doc)).encode("utf-8")


def _has_surrogate(doc: Any) -> bool:
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _accepted(answer: Answer) -> bool:
    return answer.status == 200 and any(a["outcome"] == "accepted" for a in answer.json()["alerts"])


def _check_alertname_labels(h: Harness) -> None:
    allowed = {rule.alertname for rule in h.stack.controller.config.alerts} | {"other", "unknown"}
    names = {s.labels["alertname"] for family in h.stack.registry.collect()
             if family.name == "canaryd_alerts_received" for s in family.samples}
    assert names <= allowed, names - allowed


def test_any_body_gets_a_documented_answer_and_only_an_accepted_alert_changes_state() -> None:
    with harness() as h:
        alertnames = [rule.alertname for rule in h.stack.controller.config.alerts]
        seen: dict[int | str, int] = {}

        @FUZZ
        @given(body=bodies(alertnames))
        def one(body: bytes) -> None:
            before = h.state()
            answer = h.request(b"POST", WEBHOOK.encode(), [JSON_HEADER], body)
            h.check(answer, WEBHOOK_STATUSES)
            seen[answer.status] = seen.get(answer.status, 0) + 1
            if _accepted(answer):
                seen["accepted"] = seen.get("accepted", 0) + 1
            else:
                assert h.state() == before, answer.body[:300]

        one()
        _check_alertname_labels(h)
        print(f"webhook bodies: {seen}")
        # Every example ran, and both sides of the contract were exercised.
        assert sum(n for k, n in seen.items() if isinstance(k, int)) >= FUZZ.max_examples, seen
        assert seen.get(200) and seen.get(400) and seen.get("accepted"), seen


def _header_legal(value: bytes) -> bytes:
    """Without the control bytes aiohttp's HTTP parser refuses in a header (all but tab): the value
    reaches the app. Bytes 0x80-0xff stay: they are legal on the wire and need not be UTF-8."""
    return bytes(b for b in value if (b >= 0x20 and b != 0x7F) or b == 0x09)


AUTH_VALUES = st.one_of(
    st.builds(lambda scheme, token: scheme + token,
              st.sampled_from([b"Bearer ", b"bearer ", b"BEARER  ", b"Basic ", b"", b"Bearer"]),
              st.sampled_from([WEBHOOK_TOKEN.encode(), WEBHOOK_TOKEN.encode() + b"x", b"", b"\xff", b"\xc3("])
              | st.binary(max_size=30).map(_header_legal)),
    st.binary(max_size=40).map(_header_legal),
    st.sampled_from([b"Bearer \x00", b"\x7f", b"Bearer " + WEBHOOK_TOKEN.encode() + b"\x01"]),
)


def _token_ok(value: bytes | None) -> bool:
    if value is None:
        return False
    scheme, _, given = value.strip(b" \t").partition(b" ")
    return scheme.lower() == b"bearer" and given.strip(b" \t") == WEBHOOK_TOKEN.encode()


def test_any_authorization_header_is_401_unless_it_carries_the_token() -> None:
    body = json.dumps({"version": "4", "alerts": []}).encode()
    with harness(webhook_token=WEBHOOK_TOKEN, api_token="other-token") as h:
        seen: dict[int, int] = {}

        @FUZZ
        @given(value=st.none() | AUTH_VALUES)
        def one(value: bytes | None) -> None:
            headers = [JSON_HEADER] + ([(b"Authorization", value)] if value is not None else [])
            answer = h.request(b"POST", WEBHOOK.encode(), headers, body)
            if answer.status == 400 and answer.content_type.startswith("text/plain"):
                # aiohttp's HTTP parser refused the header line itself (a control byte): not our app's
                # answer, but it must not break anything either.
                h.check_alive()
                return
            h.check(answer, WEBHOOK_STATUSES)
            assert answer.status == (200 if _token_ok(value) else 401), (value, answer.body[:200])
            seen[answer.status] = seen.get(answer.status, 0) + 1

        one()
        print(f"webhook Authorization: {seen}")
        assert sum(seen.values()) >= FUZZ.max_examples * 0.9, seen  # few refused by aiohttp's parser
        assert seen.get(200) and seen.get(401), seen
