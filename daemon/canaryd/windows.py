"""Rollout windows: when a rollout may advance. Pure: parsing and evaluation at a given time.

Two forms, one string each:
- days and hours: `Mon-Fri 02:00-05:00 UTC`, `Sat,Sun 00:00-24:00`, `daily 22:00-02:00 Europe/Berlin`
  (days optional, `daily` or `*` for every day; an end at or before the start runs past midnight and
  belongs to the day it starts; the zone is UTC unless named: an IANA name or +HH:MM);
- cron: `cron 0-59 2-4 * * 1-5 UTC` (minute hour day-of-month month day-of-week, `*`, lists, ranges
  and steps; the window is open in every minute the expression matches).

A canary with no windows may advance at any time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = frozenset(range(7))
FORM = "'Mon-Fri 02:00-05:00 UTC' (days, hours, optional zone) or 'cron M H DOM MON DOW [zone]'"
_TIME = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")
_OFFSET = re.compile(r"([+-])(\d{2}):?(\d{2})")
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 7))


@dataclass(frozen=True)
class Window:
    text: str
    zone: str
    days: frozenset[int] = EVERY_DAY  # 0 = Monday
    start: int = 0  # minutes after midnight
    end: int = 1440
    cron: tuple[frozenset[int], ...] | None = None  # minute, hour, day of month, month, weekday (0 = Monday)
    cron_days_any: bool = False  # both day fields restricted: either matches (cron's rule)

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(_zone(self.zone))
        if self.cron is not None:
            return _cron_matches(self, local)
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        return (day in self.days and minute >= self.start) or ((day - 1) % 7 in self.days and minute < self.end)


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    m = _OFFSET.fullmatch(name)
    if m:
        delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
        return timezone(-delta if m[1] == "-" else delta)
    return ZoneInfo(name)


def parse_window(text: str) -> Window:
    """One window; ValueError says what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"must be {FORM}")
    words = text.split()
    if words[0].lower() == "cron":
        return _parse_cron(text, words[1:])
    zone = "UTC"
    if not _TIME.fullmatch(words[-1]):
        zone = words.pop()
        _check_zone(zone)
    if not words or not _TIME.fullmatch(words[-1]) or len(words) > 2:
        raise ValueError(f"{text!r} is not a window; write {FORM}")
    m = _TIME.fullmatch(words[-1])
    assert m is not None
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    if int(m[2]) > 59 or int(m[4]) > 59 or start >= 1440 or end > 1440:
        raise ValueError(f"{text!r}: times are HH:MM from 00:00 to 24:00")
    days = _parse_days(words[0], text) if len(words) == 2 else EVERY_DAY
    return Window(text=text, zone=zone, days=days, start=start, end=end if end != start else start + 1440)


def _check_zone(zone: str) -> None:
    try:
        _zone(zone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {zone!r} (UTC, +HH:MM or an IANA name such as Europe/Berlin)") from e


def _parse_days(spec: str, text: str) -> frozenset[int]:
    if spec.lower() in ("daily", "*"):
        return EVERY_DAY
    out: set[int] = set()
    for part in spec.lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"{text!r}: days are Mon..Sun, ranges (Mon-Fri) or lists (Sat,Sun), or daily")
        a, b = DAYS.index(first), DAYS.index(last or first)
        out.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(out)


def _parse_cron(text: str, fields: list[str]) -> Window:
    zone = "UTC"
    if len(fields) == 6:
        zone = fields.pop()
        _check_zone(zone)
    if len(fields) != 5:
        raise ValueError(f"{text!r}: a cron window has 5 fields (minute hour day-of-month month day-of-week)")
    sets = tuple(_cron_field(f, name, lo, hi, text) for f, (name, lo, hi) in zip(fields, _CRON_FIELDS, strict=True))
    weekdays = frozenset((d - 1) % 7 for d in sets[4])  # cron: 0 and 7 are Sunday
    return Window(text=text, zone=zone, cron=(*sets[:4], weekdays),
                  cron_days_any=fields[2] != "*" and fields[4] != "*")


def _cron_field(spec: str, name: str, lo: int, hi: int, text: str) -> frozenset[int]:
    out: set[int] = set()
    for part in spec.split(","):
        rng, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if rng == "*":
                a, b = lo, hi
            else:
                first, _, last = rng.partition("-")
                a = int(first)
                b = int(last) if last else (hi if step_text else a)
        except ValueError:
            raise ValueError(f"{text!r}: the {name} field {spec!r} is not a cron field") from None
        if not lo <= a <= b <= hi or step < 1:
            raise ValueError(f"{text!r}: the {name} field {spec!r} must be within {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return frozenset(out)


def _cron_matches(w: Window, local: datetime) -> bool:
    assert w.cron is not None
    minute, hour, dom, month, dow = w.cron
    if local.minute not in minute or local.hour not in hour or local.month not in month:
        return False
    day_ok, week_ok = local.day in dom, local.weekday() in dow
    return (day_ok or week_ok) if w.cron_days_any else (day_ok and week_ok)


def parse_windows(texts: Sequence[str]) -> tuple[Window, ...]:
    return tuple(parse_window(t) for t in texts)


def is_open(windows: Sequence[Window], now: float) -> bool:
    """Whether a rollout may advance at `now` (epoch seconds): no windows, or one of them open."""
    if not windows:
        return True
    at = datetime.fromtimestamp(now, UTC)
    return any(w.is_open(at) for w in windows)


def next_open(windows: Sequence[Window], now: float, horizon_days: int = 8) -> float | None:
    """The first minute at or after `now` in which a window is open (None: none within the horizon)."""
    if not windows:
        return now
    t = datetime.fromtimestamp(now, UTC).replace(second=0, microsecond=0)
    for _ in range(horizon_days * 1440):
        if any(w.is_open(t) for w in windows):
            return max(now, t.timestamp())
        t += timedelta(minutes=1)
    return None


def closed_reason(windows: Sequence[Window], now: float) -> str | None:
    """Why a rollout may not advance now (None: it may), naming the windows and the next opening."""
    if is_open(windows, now):
        return None
    opens = next_open(windows, now)
    when = datetime.fromtimestamp(opens, UTC).strftime("%a %Y-%m-%d %H:%M UTC") if opens else "not within 8 days"
    listed = "; ".join(w.text for w in windows)
    return f"outside the rollout windows ({listed}); the next one opens {when}"
