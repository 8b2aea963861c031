"""When an alert may start: its `send_at`, pushed past the quiet hours for any alert that is not
an emergency. Pure functions of a given time, so that tests choose the clock.

Quiet hours are a window of local wall-clock time (default 22:00-07:00 Europe/Copenhagen) that
may run past midnight. An alert's start (`not_before`) is decided at creation and stored; the
dispatchers also claim only emergencies while the window is open (dispatcher.py), so a
broadcast still running at 22:00 pauses and goes on at 07:00.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Reason = Literal["now", "send_at", "quiet_hours"]


@dataclass(frozen=True)
class QuietHours:
    """Local times [start, end) in `zone`; start == end means no quiet hours."""

    start: time
    end: time
    zone: ZoneInfo

    @property
    def enabled(self) -> bool:
        return self.start != self.end

    def contains(self, moment: datetime) -> bool:
        if not self.enabled:
            return False
        local = moment.astimezone(self.zone).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def end_after(self, moment: datetime) -> datetime:
        """The first end of the window at or after `moment` (which lies inside it)."""
        return self._next(moment, self.end)

    def start_after(self, moment: datetime) -> datetime:
        """The first start of the window at or after `moment`."""
        return self._next(moment, self.start)

    def _next(self, moment: datetime, wall: time) -> datetime:
        local = moment.astimezone(self.zone)
        for offset in range(-1, 3):
            day = local.date() + timedelta(days=offset)
            # A wall-clock time skipped by a DST change resolves as fold=0 does.
            candidate = datetime.combine(day, wall, self.zone).astimezone(UTC)
            if candidate >= moment:
                return candidate
        raise AssertionError("no such time within two days")  # pragma: no cover


@dataclass(frozen=True)
class Start:
    """When sending would start, and why then. `expires_first`: the alert expires before that
    moment, so it will never be sent."""

    at: datetime
    reason: Reason
    expires_first: bool = False


def decide_start(
    now: datetime,
    emergency: bool,
    send_at: datetime | None,
    expires_at: datetime | None,
    quiet: QuietHours,
) -> Start:
    """The moment an alert created at `now` may start sending."""
    at: datetime = now
    reason: Reason = "now"
    if send_at is not None and send_at > now:
        at, reason = send_at, "send_at"
    if not emergency and quiet.contains(at):
        at, reason = quiet.end_after(at), "quiet_hours"
    expires_first = expires_at is not None and expires_at <= at
    return Start(at, reason, expires_first)


def finish(start: datetime, seconds: float, emergency: bool, quiet: QuietHours) -> datetime:
    """When sending that starts at `start` and takes `seconds` of sending ends, pausing through
    every quiet window on the way unless it is an emergency."""
    at, left = start, timedelta(seconds=seconds)
    if emergency or not quiet.enabled:
        return at + left
    for _ in range(400):  # a broadcast that takes longer than a year is not estimated further
        if quiet.contains(at):
            at = quiet.end_after(at)
        pause = quiet.start_after(at)
        if at + left <= pause:
            return at + left
        left -= pause - at
        at = pause
    return at + left
