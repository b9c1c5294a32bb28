"""Alertmanager webhook (v4) parsing, alert → canary matching and de-duplication.

Pure: no I/O, no asyncio. The server parses the body with `parse_webhook`, then asks
`plan_alerts` what to do with each alert; the controller applies the accepted ones.

Matching (`match_alert`), deliberately simple so that an operator can predict it:
- The canary name is the alert's `canary` label if it is present and non-empty, else its
  `service` label. The `canary` label wins even if it names no configured canary (no fallback),
  and names are compared exactly (no `-canary` suffix stripping, no case folding).
- With a `namespace` label, the canary `namespace/name` must be configured.
- Without one, the alert matches only if exactly one configured canary has that name.

Outcomes (`AlertOutcome.outcome`), a closed set; every one of them is answered 200, because
Alertmanager would otherwise redeliver an alert we will never act on. Only a `PayloadError`
(malformed body) is a 400.
- `accepted`: a firing alert with a configured rule, matched to a canary, not seen before.
- `duplicate`: (fingerprint, status, startsAt) already seen by this daemon.
- `ignored_resolved`: a resolved alert; recorded, but a rollback is never undone.
- `unknown_alertname`: no rule for this alertname.
- `no_canary_label`: neither a `canary` nor a `service` label.
- `unknown_canary`: the labels name no configured canary (or an ambiguous one).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

__all__ = [
    "OUTCOMES",
    "Alert",
    "AlertDeduper",
    "AlertOutcome",
    "CanaryIndex",
    "PayloadError",
    "WebhookMessage",
    "compute_fingerprint",
    "match_alert",
    "parse_timestamp",
    "parse_webhook",
    "plan_alerts",
]

Status = Literal["firing", "resolved"]
Outcome = Literal[
    "accepted", "duplicate", "ignored_resolved", "unknown_alertname", "no_canary_label", "unknown_canary"
]
OUTCOMES: tuple[str, ...] = (
    "accepted",
    "duplicate",
    "ignored_resolved",
    "unknown_alertname",
    "no_canary_label",
    "unknown_canary",
)
SUPPORTED_VERSION = "4"
_STATUSES: tuple[str, ...] = ("firing", "resolved")


class PayloadError(ValueError):
    """The webhook body is not a valid Alertmanager v4 payload; the message names the JSON path."""


@dataclass(frozen=True, slots=True)
class Alert:
    status: Status
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None  # None for Alertmanager's zero time "0001-01-01T00:00:00Z"
    generator_url: str
    fingerprint: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    version: str
    group_key: str
    status: Status
    receiver: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]


# --- timestamps -----------------------------------------------------------------------------

# RFC 3339 date-time. Go (Alertmanager) writes 0-9 fractional digits; Python's datetime holds 6.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def parse_timestamp(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware datetime (fraction truncated to microseconds).

    Raises ValueError if `text` is not RFC 3339.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(text)
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = m.groups()
    # Truncate rather than round: rounding .9999999 up could overflow into the next second.
    micro = int((frac or "").ljust(6, "0")[:6])
    if zulu:
        tz = UTC
    else:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(text)
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
    # Leap second "…:60" is valid RFC 3339 but not a Python datetime: clamp to :59.999999.
    sec = int(second)
    if sec == 60:
        sec, micro = 59, 999_999
    return datetime(int(year), int(month), int(day), int(hour), int(minute), sec, micro, tzinfo=tz)


# --- parsing --------------------------------------------------------------------------------


def parse_webhook(body: bytes | str) -> WebhookMessage:
    """Parse an Alertmanager webhook body (version "4"). Raises `PayloadError` naming the JSON path."""
    doc = _load_json(body)
    if not isinstance(doc, dict):
        raise PayloadError(f"body: expected a JSON object (Alertmanager webhook v4), got {_kind(doc)}")

    version = doc.get("version")
    if version is None:
        raise PayloadError(f'version: missing; allowed: "{SUPPORTED_VERSION}" (Alertmanager webhook v4)')
    if version != SUPPORTED_VERSION:
        raise PayloadError(
            f'version: unsupported {version!r}; allowed: "{SUPPORTED_VERSION}" (Alertmanager webhook v4)'
        )

    raw_alerts = doc.get("alerts")
    if not isinstance(raw_alerts, list):
        what = "missing" if raw_alerts is None else f"expected a list, got {_kind(raw_alerts)}"
        raise PayloadError(f"alerts: {what}")

    alerts = tuple(_parse_alert(a, f"alerts[{i}]") for i, a in enumerate(raw_alerts))
    truncated = doc.get("truncatedAlerts", 0)
    if isinstance(truncated, bool) or not isinstance(truncated, int) or truncated < 0:
        raise PayloadError(f"truncatedAlerts: expected a non-negative integer, got {truncated!r}")

    return WebhookMessage(
        version=version,
        group_key=_opt_str(doc, "groupKey", "groupKey"),
        status=_status(doc.get("status", "firing"), "status"),
        receiver=_opt_str(doc, "receiver", "receiver"),
        group_labels=_str_map(doc.get("groupLabels"), "groupLabels"),
        common_labels=_str_map(doc.get("commonLabels"), "commonLabels"),
        common_annotations=_str_map(doc.get("commonAnnotations"), "commonAnnotations"),
        external_url=_opt_str(doc, "externalURL", "externalURL"),
        truncated_alerts=truncated,
        alerts=alerts,
    )


def _load_json(body: bytes | str) -> Any:
    """json.loads, with every way it can fail as a `PayloadError`, and no lone surrogate let through."""
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as e:
        raise PayloadError(f"body: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise PayloadError(f"body: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise PayloadError("body: JSON nested too deeply") from None
    except ValueError:  # json.loads' other ValueError: an integer over sys.get_int_max_str_digits()
        raise PayloadError("body: a number in the JSON has too many digits") from None
    if (isinstance(body, str) or _SURROGATE_ESCAPE.search(body)) and (where := _lone_surrogate(doc)) is not None:
        raise PayloadError(f"{where}: not valid Unicode: a lone UTF-16 surrogate escape (\\ud800-\\udfff)")
    return doc


# A "\\uD800"-"\\uDFFF" escape; only a body with one can decode to a lone surrogate, since Python's
# UTF-8 decoder already rejects encoded surrogates. A lone one cannot be encoded again (logs,
# metrics, fingerprints), and Alertmanager (Go) never sends one, so it is a malformed payload.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(doc: Any) -> str | None:
    """The JSON path of the first string (value or key) holding a lone surrogate, else None.
    Iterative, so that a document json.loads accepted cannot exhaust the stack here."""
    stack: list[tuple[Any, str]] = [(doc, "body")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return path
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, dict):
            for k, v in value.items():
                key_path = k if path == "body" else f"{path}.{k}"
                if not _encodable(k):
                    return f"{path}: the key \"{k.encode('utf-8', 'backslashreplace').decode()}\""
                stack.append((v, key_path))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_alert(raw: Any, path: str) -> Alert:
    if not isinstance(raw, dict):
        raise PayloadError(f"{path}: expected an object, got {_kind(raw)}")
    if "status" not in raw:
        raise PayloadError(f'{path}.status: missing; allowed: "firing", "resolved"')
    status = _status(raw["status"], f"{path}.status")
    if raw.get("labels") is None:
        raise PayloadError(f"{path}.labels: missing; expected an object of string values")
    labels = _str_map(raw["labels"], f"{path}.labels")
    annotations = _str_map(raw.get("annotations"), f"{path}.annotations")

    if "startsAt" not in raw:
        raise PayloadError(f"{path}.startsAt: missing; expected an RFC 3339 timestamp")
    starts_at = _timestamp(raw["startsAt"], f"{path}.startsAt")
    ends_at: datetime | None = None
    if raw.get("endsAt") is not None:
        ends_at = _timestamp(raw["endsAt"], f"{path}.endsAt")
        if ends_at.year == 1:  # Go's zero time: "not ended"
            ends_at = None

    fingerprint = raw.get("fingerprint")
    if fingerprint is None or fingerprint == "":
        fingerprint = compute_fingerprint(labels)
    elif not isinstance(fingerprint, str):
        raise PayloadError(f"{path}.fingerprint: expected a string, got {_kind(fingerprint)}")

    return Alert(
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=_opt_str(raw, "generatorURL", f"{path}.generatorURL"),
        fingerprint=fingerprint,
    )


def _timestamp(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise PayloadError(f"{path}: expected an RFC 3339 timestamp string, got {_kind(value)}")
    try:
        return parse_timestamp(value)
    except ValueError:
        shown = value if len(value) <= 64 else value[:61] + "..."
        raise PayloadError(f"{path}: not an RFC 3339 timestamp: {shown!r}") from None


def _status(value: Any, path: str) -> Status:
    if value not in _STATUSES:
        raise PayloadError(f'{path}: expected "firing" or "resolved", got {value!r}')
    return value  # type: ignore[no-any-return]


def _str_map(value: Any, path: str) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{path}: expected an object of string values, got {_kind(value)}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise PayloadError(f"{path}.{k}: expected a string, got {_kind(v)}")
    return dict(value)


def _opt_str(doc: dict[str, Any], key: str, path: str) -> str:
    value = doc.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PayloadError(f"{path}: expected a string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


# Alertmanager's own fingerprint (prometheus/common model.LabelSet.Fingerprint): FNV-1a 64 over
# the sorted label names and values, each followed by the 0xff separator. Reproducing it means a
# sender that omits the field still de-duplicates against Alertmanager's own deliveries.
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = 0xFFFFFFFFFFFFFFFF


def compute_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable 16-hex-digit fingerprint of a label set (same algorithm as Alertmanager)."""
    if not labels:
        return f"{_FNV_OFFSET:016x}"
    h = _FNV_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            # surrogatepass: a lone surrogate (which parse_webhook rejects) must not make this raise
            for byte in part.encode("utf-8", "surrogatepass") + b"\xff":
                h = ((h ^ byte) * _FNV_PRIME) & _MASK64
    return f"{h:016x}"


# --- matching -------------------------------------------------------------------------------


class CanaryIndex:
    """Lookup of configured canaries by (namespace, name) and by name alone. Build once per message."""

    __slots__ = ("_keys", "_by_name")

    def __init__(self, canaries: Sequence[tuple[str, str]]) -> None:
        self._keys: frozenset[tuple[str, str]] = frozenset(canaries)
        by_name: dict[str, list[str]] = {}
        for ns, name in self._keys:
            by_name.setdefault(name, []).append(ns)
        self._by_name = by_name

    def lookup(self, name: str, namespace: str | None) -> str | None:
        if namespace is not None:
            return f"{namespace}/{name}" if (namespace, name) in self._keys else None
        namespaces = self._by_name.get(name, ())
        # Without a namespace label, an ambiguous name matches nothing rather than guessing.
        return f"{namespaces[0]}/{name}" if len(namespaces) == 1 else None


def _canary_name(alert: Alert) -> str | None:
    return alert.labels.get("canary") or alert.labels.get("service") or None


def match_alert(alert: Alert, canaries: Sequence[tuple[str, str]] | CanaryIndex) -> str | None:
    """The key "namespace/name" of the canary this alert is about, or None. Rules in the module doc."""
    name = _canary_name(alert)
    if name is None:
        return None
    index = canaries if isinstance(canaries, CanaryIndex) else CanaryIndex(canaries)
    return index.lookup(name, alert.labels.get("namespace") or None)


# --- de-duplication -------------------------------------------------------------------------


class AlertDeduper:
    """Remembers (fingerprint, status, startsAt) of alerts seen, bounded by LRU eviction.

    Alertmanager redelivers a group every group_interval; a redelivery must change nothing.
    If acting on an alert fails after `seen`, call `forget` so that the redelivery is retried.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries: must be at least 1, got {max_entries}")
        self._max = max_entries
        self._seen: OrderedDict[tuple[str, str, datetime], None] = OrderedDict()

    @staticmethod
    def _key(alert: Alert) -> tuple[str, str, datetime]:
        return (alert.fingerprint, alert.status, alert.starts_at)

    def seen(self, alert: Alert) -> bool:
        """Record the alert; return whether it had been seen before."""
        key = self._key(alert)
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        self._seen[key] = None
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return False

    def forget(self, alert: Alert) -> None:
        self._seen.pop(self._key(alert), None)

    def __len__(self) -> int:
        return len(self._seen)


# --- planning -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertOutcome:
    alert: Alert
    alertname: str
    status: Status
    outcome: Outcome
    canary_key: str | None  # "namespace/name"
    action: str | None  # the configured action, set only when outcome == "accepted"


def plan_alerts(
    message: WebhookMessage,
    canaries: Sequence[tuple[str, str]] | CanaryIndex,
    rules: Mapping[str, str],
    deduper: AlertDeduper,
) -> list[AlertOutcome]:
    """Classify each alert of a message, in order. Only `accepted` outcomes carry an action.

    Checks run in this order: alertname rule, canary label, canary match, duplicate, resolved.
    Only alerts that would concern a configured canary reach the deduper, so junk cannot evict
    real entries. Resolved alerts are recorded (a redelivery is a `duplicate`) but never act.
    """
    index = canaries if isinstance(canaries, CanaryIndex) else CanaryIndex(canaries)
    out: list[AlertOutcome] = []
    for alert in message.alerts:
        alertname = alert.alertname
        key: str | None = None
        action: str | None = None
        outcome: Outcome
        if alertname not in rules:
            outcome = "unknown_alertname"
        elif _canary_name(alert) is None:
            outcome = "no_canary_label"
        elif (key := match_alert(alert, index)) is None:
            outcome = "unknown_canary"
        elif deduper.seen(alert):
            outcome = "duplicate"
        elif alert.status == "resolved":
            outcome = "ignored_resolved"
        else:
            outcome = "accepted"
            action = rules[alertname]
        out.append(AlertOutcome(alert, alertname, alert.status, outcome, key, action))
    return out
