"""Throttles shared by every API process: fixed windows (an hour unless told otherwise) counted in
PostgreSQL. Also used for each API key's writes (api/guard.py).

Sign-up is the one door a stranger can use to make the service send an SMS to any number, and
codes are short enough to guess by trying; so sign-up SMS are counted per number and per client,
and code attempts per client. Keys are hashed (what is counted is a phone number or an address:
personal data that has no business in a counter table).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg

WINDOW = timedelta(hours=1)

HIT = """
INSERT INTO throttles (key, window_start, hits) VALUES ($1, $2, 1)
ON CONFLICT (key, window_start) DO UPDATE SET hits = throttles.hits + 1
RETURNING hits
"""

FORGET = "DELETE FROM throttles WHERE window_start < $1"


class Throttled(Exception):
    """Over the limit; try again in `retry_after` seconds."""

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(f"too many {what}; try again in {retry_after} s")
        self.what = what
        self.retry_after = retry_after


def _key(kind: str, value: str) -> bytes:
    return hashlib.sha256(f"{kind}\0{value}".encode()).digest()


def _window(now: datetime, length: timedelta = WINDOW) -> datetime:
    seconds = int(length.total_seconds())
    return datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, UTC)


async def hit(
    conn: asyncpg.Connection, kind: str, value: str, limit: int, window: timedelta = WINDOW
) -> None:
    """Count one more `kind` for `value` in this window (an hour unless told otherwise); raise
    Throttled once over `limit`."""
    now = datetime.now(UTC)
    start = _window(now, window)
    hits = await conn.fetchval(HIT, _key(kind, value), start)
    if hits > limit:
        retry_after = int((start + window - now).total_seconds()) + 1
        raise Throttled(kind, retry_after)


async def forget_old(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    await conn.execute(FORGET, _window(datetime.now(UTC)) - WINDOW)
