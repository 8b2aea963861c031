"""Database outages as a long-running loop sees them: one warning when the database goes away,
one line when it is back, and a growing, jittered pause between attempts in between, instead of
a traceback per failed attempt and a fixed retry interval."""

from __future__ import annotations

import logging
import random
import time

from broadcaster.database import describe_error, is_outage

log = logging.getLogger(__name__)

FIRST_PAUSE_SECONDS = 0.2
MAX_PAUSE_SECONDS = 5.0


class OutageWatch:
    """Shared by the loops of one process, so an outage is reported once, not once per loop."""

    def __init__(self, name: str = "database") -> None:
        self.name = name
        self.down_since: float | None = None
        self._failures = 0
        self._rng = random.Random()

    def failed(self, exc: BaseException, where: str) -> float:
        """Report a failed attempt; returns how long the caller should pause before the next.

        An outage (connection refused or lost, server shutting down or starting) is logged as
        one warning when it starts. Any other database error is a fault of ours or of the data:
        logged in full each time, with the same pause, so it cannot spin."""
        self._failures += 1
        if not is_outage(exc):
            log.error("%s failed: %s", where, describe_error(exc), exc_info=exc)
        elif self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(
                "%s unavailable (%s during %s); retrying with backoff",
                self.name,
                describe_error(exc),
                where,
            )
        pause = min(MAX_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2 ** min(self._failures - 1, 8))
        return pause * self._rng.uniform(0.5, 1.0)

    def ok(self) -> None:
        """Report a successful attempt: one line if an outage ends with it."""
        if self._failures:
            if self.down_since is not None:
                log.info(
                    "%s available again after %.1f s", self.name, time.monotonic() - self.down_since
                )
            self.down_since = None
            self._failures = 0
