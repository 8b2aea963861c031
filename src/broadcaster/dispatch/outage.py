"""Database outages as a long-running loop sees them: one warning when the database goes away,
one line when it is back, and a growing, jittered pause between attempts in between, instead of
a traceback per failed attempt and a fixed retry interval.

Only an attempt begun after the last reported failure can end an outage: a statement that
started before the server went away may still succeed (or a loop may carry on after a failure
it reported itself, such as a batch whose results could not be written), and taking that for
the database's return made the log say "unavailable", "available again after 0.0 s",
"unavailable" within milliseconds."""

from __future__ import annotations

import logging
import random
import time

from broadcaster.database import describe_error, is_outage

log = logging.getLogger(__name__)

FIRST_PAUSE_SECONDS = 0.2
MAX_PAUSE_SECONDS = 5.0


class OutageWatch:
    """Shared by the loops of one process, so an outage is reported once, not once per loop.
    `meanwhile` ends the warning: what the process does until the database is back."""

    def __init__(self, name: str = "database", meanwhile: str = "retrying with backoff") -> None:
        self.name = name
        self.meanwhile = meanwhile
        self.down_since: float | None = None
        self._failures = 0
        self._reports = 0  # failures reported, ever: the mark of `attempt`
        self._rng = random.Random()

    def attempt(self) -> int:
        """A mark to take before an attempt, for `ok` after it."""
        return self._reports

    def failed(self, exc: BaseException, where: str) -> float:
        """Report a failed attempt; returns how long the caller should pause before the next.

        An outage (connection refused or lost, server shutting down or starting) is logged as
        one warning when it starts. Any other database error is a fault of ours or of the data:
        logged in full each time, with the same pause, so it cannot spin."""
        self._failures += 1
        self._reports += 1
        if not is_outage(exc):
            log.error("%s failed: %s", where, describe_error(exc), exc_info=exc)
        elif self.down_since is None:
            self.down_since = time.monotonic()
            log.warning(
                "%s unavailable (%s during %s); %s",
                self.name,
                describe_error(exc),
                where,
                self.meanwhile,
            )
        pause = min(MAX_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2 ** min(self._failures - 1, 8))
        return pause * self._rng.uniform(0.5, 1.0)

    def ok(self, mark: int) -> None:
        """Report a successful attempt, begun at `mark` (from `attempt`): one line if an outage
        ends with it. It does not end one if a failure was reported since it began."""
        if self._failures and mark == self._reports:
            if self.down_since is not None:
                log.info(
                    "%s available again after %.1f s", self.name, time.monotonic() - self.down_since
                )
            self.down_since = None
            self._failures = 0
