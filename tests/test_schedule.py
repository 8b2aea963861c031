"""When an alert starts: send_at and quiet hours, with the clock given (no waiting)."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from broadcaster.ingest.schedule import QuietHours, decide_start, finish
from broadcaster.settings import ConfigError, load_settings

CPH = ZoneInfo("Europe/Copenhagen")
QUIET = QuietHours(time(22), time(7), CPH)


def cph(*args: int) -> datetime:
    return datetime(*args, tzinfo=CPH)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (cph(2026, 12, 7, 21, 59, 59), False),
        (cph(2026, 12, 7, 22, 0), True),
        (cph(2026, 12, 7, 23, 30), True),
        (cph(2026, 12, 8, 0, 0), True),
        (cph(2026, 12, 8, 6, 59, 59), True),
        (cph(2026, 12, 8, 7, 0), False),
        (cph(2026, 12, 8, 12, 0), False),
    ],
)
def test_the_window_runs_past_midnight(now: datetime, inside: bool) -> None:
    assert QUIET.contains(now) is inside
    assert QUIET.contains(now.astimezone(ZoneInfo("UTC"))) is inside


def test_a_normal_alert_at_night_waits_for_the_morning() -> None:
    start = decide_start(cph(2026, 12, 7, 23, 0), False, None, None, QUIET)
    assert (start.at, start.reason, start.expires_first) == (
        cph(2026, 12, 8, 7, 0),
        "quiet_hours",
        False,
    )
    start = decide_start(cph(2026, 12, 8, 6, 59), False, None, None, QUIET)
    assert start.at == cph(2026, 12, 8, 7, 0)


def test_an_emergency_goes_at_once() -> None:
    now = cph(2026, 12, 7, 23, 0)
    start = decide_start(now, True, None, None, QUIET)
    assert (start.at, start.reason) == (now, "now")


def test_daytime_goes_at_once() -> None:
    now = cph(2026, 12, 8, 12, 0)
    assert decide_start(now, False, None, None, QUIET).reason == "now"


def test_send_at_and_quiet_hours() -> None:
    now = cph(2026, 12, 8, 12, 0)
    start = decide_start(now, False, cph(2026, 12, 8, 18, 0), None, QUIET)
    assert (start.at, start.reason) == (cph(2026, 12, 8, 18, 0), "send_at")
    start = decide_start(now, False, cph(2026, 12, 8, 23, 15), None, QUIET)
    assert (start.at, start.reason) == (cph(2026, 12, 9, 7, 0), "quiet_hours")
    start = decide_start(now, True, cph(2026, 12, 8, 23, 15), None, QUIET)
    assert (start.at, start.reason) == (cph(2026, 12, 8, 23, 15), "send_at")


def test_an_alert_that_expires_before_morning_is_marked() -> None:
    now = cph(2026, 12, 7, 23, 0)
    start = decide_start(now, False, None, cph(2026, 12, 8, 6, 0), QUIET)
    assert start.expires_first
    assert not decide_start(now, False, None, cph(2026, 12, 8, 8, 0), QUIET).expires_first


def test_across_a_daylight_saving_change() -> None:
    # 29 March 2026: Copenhagen goes from 02:00 CET to 03:00 CEST in the night.
    start = decide_start(cph(2026, 3, 28, 23, 0), False, None, None, QUIET)
    assert start.at == cph(2026, 3, 29, 7, 0)
    utc = ZoneInfo("UTC")
    assert start.at.astimezone(utc) - cph(2026, 3, 28, 23, 0).astimezone(utc) == timedelta(hours=7)


def test_no_quiet_hours_when_start_equals_end() -> None:
    off = QuietHours(time(0), time(0), CPH)
    now = cph(2026, 12, 7, 23, 0)
    assert decide_start(now, False, None, None, off).reason == "now"


def test_settings() -> None:
    default = load_settings(quiet_hours_start="22:00", quiet_hours_end="07:00")
    assert default.quiet_hours() == QUIET
    settings = load_settings(quiet_hours_start="21:30", quiet_hours_end="06:00")
    assert settings.quiet_hours() == QuietHours(time(21, 30), time(6), CPH)
    offset = load_settings(clock_offset_seconds=3600)
    assert timedelta(seconds=3599) < offset.now() - load_settings().now() < timedelta(seconds=3601)
    with pytest.raises(ConfigError, match="time zone"):
        load_settings(quiet_hours_timezone="Europe/Atlantis")


def test_the_completion_estimate_pauses_for_the_night() -> None:
    start = cph(2026, 12, 7, 21, 0)
    # Two hours of sending from 21:00: one before 22:00, the other from 07:00.
    assert finish(start, 7200, False, QUIET) == cph(2026, 12, 8, 8, 0)
    assert finish(start, 7200, True, QUIET) == cph(2026, 12, 7, 23, 0)
    assert finish(start, 1800, False, QUIET) == cph(2026, 12, 7, 21, 30)
    # Twenty hours: one the first evening, fifteen the next day (07:00-22:00), four after.
    assert finish(start, 20 * 3600, False, QUIET) == cph(2026, 12, 9, 7, 0) + timedelta(hours=4)
