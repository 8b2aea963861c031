"""Database outages as a long-running loop sees them: one line when the database goes away (or
runs out of disk, or keeps timing out), one line when it is back, and a growing, jittered pause
between attempts in between, instead of a traceback per failed attempt and a fixed retry
interval.

Only an attempt begun after the last reported failure can end an outage: a statement that
started before the server went away may still succeed (or a loop may carry on after a failure
it reported itself, such as a batch whose results could not be written), and taking that for
the database's return made the log say "unavailable", "available again after 0.0 s",
"unavailable" within milliseconds.

A full disk or a statement timeout is a partial trouble: reads go on succeeding while writes
(or the statements waiting for a lock) fail, and now and then a write gets through (space a
vacuum freed). So it ends only once the operation that met it first (the same `where`) has
succeeded since the last failure and no failure was reported for PARTIAL_SETTLE_SECONDS (told
at that success or at any later one: the last write of a broadcast may come just after the
last failure), or when none was for PARTIAL_QUIET_SECONDS; otherwise every read between two
failed writes would log the end of the trouble and the next write its start again."""

from __future__ import annotations

import logging
import random
import time

from broadcaster.database import (
    BUSY,
    DISK_FULL,
    OUT_OF_RESOURCES,
    UNAVAILABLE,
    describe_error,
    trouble,
)

log = logging.getLogger(__name__)

FIRST_PAUSE_SECONDS = 0.2
MAX_PAUSE_SECONDS = 5.0
PARTIAL_SETTLE_SECONDS = 1.0
PARTIAL_QUIET_SECONDS = 30.0

# How each trouble is told in the log, and at which level: a full disk needs someone to free
# space, the others usually pass by themselves.
WORDS = {
    UNAVAILABLE: "unavailable",
    DISK_FULL: "cannot write: its disk is full",
}


# And its end.
END_WORDS = {
    UNAVAILABLE: "available again",
    DISK_FULL: "can write again",
    OUT_OF_RESOURCES: "has resources again",
    BUSY: "answers in time again",
}


def words(kind: str) -> str:
    return WORDS.get(kind, kind)


class OutageWatch:
    """Shared by the loops of one process, so an outage is reported once, not once per loop.
    `meanwhile` ends the warning: what the process does until the database is back."""

    def __init__(self, name: str = "database", meanwhile: str = "retrying with backoff") -> None:
        self.name = name
        self.meanwhile = meanwhile
        self.down_since: float | None = None
        self.kind: str | None = None  # the trouble of the outage under way (database.trouble)
        self._where = ""  # the operation that met it first
        self._last_failure = 0.0
        self._recovered = False  # the operation that met it succeeded since the last failure
        self._failures = 0
        self._reports = 0  # failures reported, ever: the mark of `attempt`
        self._rng = random.Random()

    def attempt(self) -> int:
        """A mark to take before an attempt, for `ok` after it."""
        return self._reports

    def failed(self, exc: BaseException, where: str) -> float:
        """Report a failed attempt; returns how long the caller should pause before the next.

        An outage (connection refused or lost, server shutting down or starting, disk full,
        out of memory or connections, statement or lock timeout) is logged as one line when it
        starts (and when it changes kind). Any other database error is a fault of ours or of
        the data: logged in full each time, with the same pause, so it cannot spin."""
        self._failures += 1
        self._reports += 1
        self._last_failure = time.monotonic()
        self._recovered = False
        kind = trouble(exc)
        if kind is None:
            log.error("%s failed: %s", where, describe_error(exc), exc_info=exc)
        elif self.down_since is None or kind != self.kind:
            if self.down_since is None:
                self.down_since = time.monotonic()
            self.kind, self._where = kind, where
            log.log(
                logging.ERROR if kind == DISK_FULL else logging.WARNING,
                "%s %s (%s during %s); %s",
                self.name,
                words(kind),
                describe_error(exc),
                where,
                self.meanwhile,
            )
        pause = min(MAX_PAUSE_SECONDS, FIRST_PAUSE_SECONDS * 2 ** min(self._failures - 1, 8))
        return pause * self._rng.uniform(0.5, 1.0)

    def ok(self, mark: int, where: str | None = None) -> None:
        """Report a successful attempt, begun at `mark` (from `attempt`), of the operation
        `where`: one line if an outage ends with it. It does not end one if a failure was
        reported since it began, nor a partial trouble unless it settled (see the module's
        docstring)."""
        if not self._failures or mark != self._reports:
            return
        if self.kind not in (None, UNAVAILABLE):
            since = time.monotonic() - self._last_failure
            self._recovered = self._recovered or where == self._where
            settled = self._recovered and since >= PARTIAL_SETTLE_SECONDS
            if not settled and since < PARTIAL_QUIET_SECONDS:
                return
        if self.down_since is not None and self.kind is not None:
            log.info(
                "%s %s after %.1f s",
                self.name,
                END_WORDS[self.kind],
                time.monotonic() - self.down_since,
            )
        self.down_since = None
        self.kind = None
        self._recovered = False
        self._failures = 0
