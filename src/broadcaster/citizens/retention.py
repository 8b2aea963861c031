"""Retention: personal data is kept only as long as it is of use.

Run hourly by each dispatcher's housekeeping (every statement is idempotent and bounded, so
several dispatchers running it at once only share the work):
- inbound messages and delivery receipts older than BROADCASTER_RETENTION_DAYS (90) lose the
  number and their raw gateway data (which carries it); statistics (states, counts, tip texts
  and their alert) stay;
- subscribers who never confirmed a sign-up (pending, no areas) are deleted after
  BROADCASTER_PENDING_DAYS (7), with their sign-ups and the notices sent to them;
- the texts of finished notices (which may hold a code) are blanked, and leave requests a day
  past their expiry deleted (leaving.py);
- throttle counters of past windows are dropped.
"""

from __future__ import annotations

import asyncpg

from broadcaster.citizens import leaving
from broadcaster.citizens.notices import blank_finished
from broadcaster.citizens.places import HAS_PLACES
from broadcaster.citizens.throttle import forget_old
from broadcaster.settings import Settings

BATCH = 10_000

FORGET_INBOUND_NUMBERS = """
UPDATE inbound_messages SET phone = NULL, raw = '{}'
WHERE id = ANY(ARRAY(SELECT id FROM inbound_messages
                     WHERE received_at < now() - make_interval(days => $1)
                       AND (phone IS NOT NULL OR raw <> '{}')
                     LIMIT $2))
"""

FORGET_RECEIPT_NUMBERS = """
UPDATE delivery_receipts SET phone = NULL, raw = '{}'
WHERE id = ANY(ARRAY(SELECT id FROM delivery_receipts
                     WHERE received_at < now() - make_interval(days => $1)
                       AND (phone IS NOT NULL OR raw <> '{}')
                     LIMIT $2))
"""

DELETE_STALE_PENDING = f"""
DELETE FROM subscribers
WHERE id = ANY(ARRAY(SELECT s.id FROM subscribers s
                     WHERE s.status = 'pending' AND s.confirmed_at IS NULL
                       AND s.created_at < now() - make_interval(days => $1)
                       AND NOT {HAS_PLACES}
                     LIMIT $2))
"""


async def run(pool: asyncpg.Pool, settings: Settings) -> None:
    async with pool.acquire() as conn:
        await conn.execute(FORGET_INBOUND_NUMBERS, settings.retention_days, BATCH)
        await conn.execute(FORGET_RECEIPT_NUMBERS, settings.retention_days, BATCH)
        await conn.execute(DELETE_STALE_PENDING, settings.pending_days, BATCH)
        await blank_finished(conn)
        await conn.execute(leaving.FORGET_OLD)
        await forget_old(conn)
