"""Rollout windows (windows.py): the day/time form and the cron form, zones, windows past midnight,
and the reason a closed window gives."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from canaryd.config import ConfigError, parse_config
from canaryd.windows import closed_reason, is_open, next_open, parse_window, parse_windows


def at(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


MON_0300, MON_0500, SUN_1200 = at(2026, 11, 30, 3, 0), at(2026, 11, 30, 5, 0), at(2026, 11, 29, 12, 0)


def test_weekday_hours_in_utc() -> None:
    w = parse_windows(["Mon-Fri 02:00-05:00 UTC"])
    assert is_open(w, MON_0300) and is_open(w, at(2026, 12, 4, 2, 0))  # Friday 02:00
    assert not is_open(w, MON_0500)  # the end is excluded
    assert not is_open(w, SUN_1200) and not is_open(w, at(2026, 12, 5, 3, 0))  # Saturday
    assert next_open(w, SUN_1200) == at(2026, 11, 30, 2, 0)
    assert closed_reason(w, SUN_1200) == ("outside the rollout windows (Mon-Fri 02:00-05:00 UTC); "
                                          "the next one opens Mon 2026-11-30 02:00 UTC")
    assert closed_reason(w, MON_0300) is None


def test_no_windows_is_always_open() -> None:
    assert is_open((), SUN_1200) and closed_reason((), SUN_1200) is None


def test_past_midnight_belongs_to_the_day_it_starts() -> None:
    w = parse_windows(["Fri 22:00-02:00"])
    assert is_open(w, at(2026, 12, 4, 23, 0)) and is_open(w, at(2026, 12, 5, 1, 59))  # Fri 23:00, Sat 01:59
    assert not is_open(w, at(2026, 12, 4, 1, 0))  # Friday 01:00 belongs to Thursday's night: none


def test_zones_lists_and_wrapping_ranges() -> None:
    berlin = parse_windows(["daily 02:00-03:00 Europe/Berlin"])
    assert is_open(berlin, at(2026, 11, 30, 1, 30)) and not is_open(berlin, at(2026, 11, 30, 2, 30))  # UTC+1
    assert is_open(parse_windows(["Sat,Sun 10:00-11:00 +05:30"]), at(2026, 11, 29, 4, 45))
    assert parse_window("Fri-Mon 00:00-24:00").days == frozenset({4, 5, 6, 0})
    assert is_open(parse_windows(["Sat 00:00-24:00", "Mon-Fri 02:00-05:00"]), at(2026, 12, 5, 18, 0))


def test_cron_form() -> None:
    w = parse_windows(["cron * 2-4 * * 1-5"])
    assert is_open(w, MON_0300) and not is_open(w, MON_0500) and not is_open(w, SUN_1200)
    assert is_open(parse_windows(["cron 0-29 */6 * * *"]), at(2026, 11, 29, 18, 15))
    assert not is_open(parse_windows(["cron 0-29 */6 * * *"]), at(2026, 11, 29, 18, 45))
    assert is_open(parse_windows(["cron * * 1 * 0"]), at(2026, 11, 29, 9, 0))  # a Sunday: either day field


@pytest.mark.parametrize("text", ["", "Mon-Fri", "Someday 02:00-05:00", "02:00-25:00", "Mon 02:00-05:00 Mars/Base",
                                  "cron * * *", "cron 61 * * * *", "Mon 2:0-3:00"])
def test_invalid_windows_say_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError):
        parse_window(text)


def test_the_config_refuses_an_invalid_window_with_its_path() -> None:
    canary = {"name": "a", "namespace": "ns", "route": "a", "windows": ["Mon-Fri 02:00-05:00", "Tuesday 9-5"],
              "stable": {"deployment": "a-s", "selector": 'job="s"'}, "canary": {"deployment": "a-c", "selector": 'job="c"'}}
    with pytest.raises(ConfigError, match=r"canaries\[0\]\.windows\[1\]"):
        parse_config({"canaries": [canary]}, "test")
